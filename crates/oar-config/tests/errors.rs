//! Every kind of broken config names the file, the line (and column) and the key.

use std::path::Path;

use oar_config::{ConfigError, parse_str};
use pretty_assertions::assert_eq;

const RUNNER: &str =
    "[[runners]]\nname = \"r\"\nurl = \"https://gitlab.example.com\"\ntoken = \"t\"\n";

/// `(config text, expected error message)`. `{R}` is replaced by a valid runner header that
/// takes lines 1-4.
const CASES: &[(&str, &str)] = &[
    // Syntax.
    (
        "concurrent = [",
        "config.toml:1:15: invalid TOML: unclosed array, expected `]`",
    ),
    (
        "a = 1\na = 2",
        "config.toml:2:1: invalid TOML: duplicate key",
    ),
    // Types.
    (
        "concurrent = \"x\"",
        "config.toml:1:14: invalid type for concurrent: expected an integer, found a string",
    ),
    (
        "log_level = 3",
        "config.toml:1:13: invalid type for log_level: expected a string, found an integer",
    ),
    (
        "check_interval = 1.5",
        "config.toml:1:18: invalid type for check_interval: expected an integer, found a float",
    ),
    (
        "[runners]\nurl = \"https://x\"",
        "config.toml:1:1: invalid type for runners: expected an array of tables ([[runners]]), found a table",
    ),
    (
        "{R}executor = \"shell\"\nenvironment = [\"A=1\", 2]",
        "config.toml:6:23: invalid type for runners[0].environment[1]: expected a string, found an integer",
    ),
    (
        "{R}executor = \"shell\"\ntoken_obtained_at = 5",
        "config.toml:6:21: invalid type for runners[0].token_obtained_at: expected a datetime or an RFC 3339 string, found an integer",
    ),
    (
        "{R}executor = \"shell\"\n[runners.cache.s3]\ninsecure = \"yes\"",
        "config.toml:7:12: invalid type for runners[0].cache.s3.insecure: expected a boolean, found a string",
    ),
    (
        "{R}executor = \"shell\"\n[runners.feature_flags]\nFF_X = \"true\"",
        "config.toml:7:8: invalid type for runners[0].feature_flags.FF_X: expected a boolean, found a string",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes]\npull_policy = 5",
        "config.toml:7:15: invalid type for runners[0].kubernetes.pull_policy: expected a string or an array of strings, found an integer",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes]\nnode_selector = { a = 1 }",
        "config.toml:7:23: invalid type for runners[0].kubernetes.node_selector.a: expected a string, found an integer",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes.container_lifecycle.post_start.tcp_socket]\nport = 70000",
        "config.toml:7:8: invalid value for runners[0].kubernetes.container_lifecycle.post_start.tcp_socket.port: expected an integer from 0 to 65535, found 70000",
    ),
    // Values.
    (
        "concurrent = -1",
        "config.toml:1:14: invalid value for concurrent: expected a non-negative integer, found -1",
    ),
    (
        "log_format = \"xml\"",
        "config.toml:1:14: invalid value for log_format: expected one of runner, text, json, found \"xml\"",
    ),
    (
        "connection_max_age = \"15 minutes\"",
        "config.toml:1:22: invalid value for connection_max_age: expected a duration such as \"15m\" or \"1h30m\", found \"15 minutes\"",
    ),
    (
        "{R}executor = \"shell\"\nenvironment = [\"A=1\", \"B\"]",
        "config.toml:6:23: invalid value for runners[0].environment[1]: expected KEY=VALUE, found \"B\"",
    ),
    (
        "{R}executor = \"shell\"\nshell = \"cmd\"",
        "config.toml:6:9: invalid value for runners[0].shell: expected one of bash, sh, pwsh, powershell, found \"cmd\"",
    ),
    (
        "{R}executor = \"shell\"\ntls-cert-file = \"/c.pem\"",
        "config.toml:6:17: invalid value for runners[0].tls-cert-file: tls-cert-file needs tls-key-file as well",
    ),
    (
        "{R}executor = \"shell\"\n[runners.cache]\nType = \"s4\"",
        "config.toml:7:8: invalid value for runners[0].cache.Type: expected one of s3, gcs, azure, found \"s4\"",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes]\ncpu_limit = \"lots\"",
        "config.toml:7:13: invalid value for runners[0].kubernetes.cpu_limit: expected a Kubernetes quantity such as \"500m\" or \"2Gi\", found \"lots\"",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes]\npull_policy = [\"always\", \"sometimes\"]",
        "config.toml:7:26: invalid value for runners[0].kubernetes.pull_policy[1]: expected one of always, if-not-present, never, found \"sometimes\"",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes]\npoll_timeout = -5",
        "config.toml:7:16: invalid value for runners[0].kubernetes.poll_timeout: expected a non-negative integer, found -5",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.host_aliases]]\nip = \"localhost\"",
        "config.toml:7:6: invalid value for runners[0].kubernetes.host_aliases[0].ip: expected an IP address, found \"localhost\"",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.pod_spec]]\nname = \"p\"\npatch = \"{}\"\npatch_type = \"yaml\"",
        "config.toml:9:14: invalid value for runners[0].kubernetes.pod_spec[0].patch_type: expected one of strategic, merge, json, found \"yaml\"",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.pod_spec]]\nname = \"p\"\npatch = \"{}\"\npatch_path = \"/p.yaml\"",
        "config.toml:9:14: invalid value for runners[0].kubernetes.pod_spec[0].patch_path: ambiguous patch: both patch and patch_path are set",
    ),
    // Semantic errors with their own variants.
    (
        "{R}executor = \"docker\"",
        "config.toml:5:12: runner \"r\" uses executor \"docker\" (runners[0].executor); Oar supports: shell, kubernetes",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes]\nnamespace_overwrite_allowed = \"ci-(\"",
        "config.toml:7:31: invalid regular expression for runners[0].kubernetes.namespace_overwrite_allowed",
    ),
    (
        "[[runners]]\nurl = \"ftp://gitlab.example.com\"\nexecutor = \"shell\"",
        "config.toml:2:7: invalid value for runners[0].url: expected an http or https URL, found scheme \"ftp\"",
    ),
    (
        "[[runners]]\nurl = \"gitlab.example.com\"\nexecutor = \"shell\"",
        "config.toml:2:7: invalid URL for runners[0].url",
    ),
    // Missing keys point at the table that should hold them.
    (
        "concurrent = 1\n\n[[runners]]\nname = \"r\"\ntoken = \"t\"\nexecutor = \"shell\"",
        "config.toml:3:1: missing key runners[0].url",
    ),
    ("{R}", "config.toml:1:1: missing key runners[0].executor"),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.volumes.pvc]]\nname = \"x\"",
        "config.toml:6:1: missing key runners[0].kubernetes.volumes.pvc[0].mount_path",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.services]]\nalias = \"db\"",
        "config.toml:6:1: missing key runners[0].kubernetes.services[0].name",
    ),
    // Identity rules (Oar's own keys): refused at load, never half-applied.
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nprojects = [\"acme/*\"]",
        "config.toml:6:1: missing key runners[0].kubernetes.identity[0].service_account",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"",
        "config.toml:6:1: missing key runners[0].kubernetes.identity[0].projects",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"\nprojects = []",
        "config.toml:8:12: invalid value for runners[0].kubernetes.identity[0].projects: a rule needs at least one project glob (\"**\" for every project, if that is really meant)",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"Deploy_Prod\"\nprojects = [\"a/*\"]",
        "config.toml:7:19: invalid value for runners[0].kubernetes.identity[0].service_account: \"Deploy_Prod\" is not a ServiceAccount name (lower-case letters, digits, '-' and '.')",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"\nprojects = [\"acme/*\", \"acme/[x\"]",
        "config.toml:8:23: invalid value for runners[0].kubernetes.identity[0].projects[1]: \"acme/[x\" is not a valid glob: a [ is not closed",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"\nprojects = [\"a/*\"]\nrefs = [\"{main\"]",
        "config.toml:9:9: invalid value for runners[0].kubernetes.identity[0].refs[0]: \"{main\" is not a valid glob: a { is not closed",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"\nprojects = [\"a/*\"]\nprotected_refs = true",
        "config.toml:9:1: invalid value for runners[0].kubernetes.identity[0].protected_refs: unknown field `protected_refs`, expected one of `service_account`, `projects`, `refs`, `ref_type`, `protected_ref`, `environments`, `namespace`, `require_id_token`, `environment`, `projected_token`",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"\nprojects = [\"a/*\"]\nref_type = \"commit\"",
        "config.toml:9:12: invalid value for runners[0].kubernetes.identity[0].ref_type: expected one of branch, tag, found \"commit\"",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"\nprojects = [\"a/*\"]\nenvironments = [\"production\"]",
        "config.toml:9:16: invalid value for runners[0].kubernetes.identity[0].environments: environments needs require_id_token: a job's environment is proven only by its GitLab ID token (job variables can be set by job authors)",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"\nprojects = [\"a/*\"]\nrequire_id_token = \"OAR-ID\"",
        "config.toml:9:20: invalid value for runners[0].kubernetes.identity[0].require_id_token: \"OAR-ID\" is not a variable name (letters, digits and '_')",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"\nprojects = [\"a/*\"]\nnamespace = \"a.b\"",
        "config.toml:9:13: invalid value for runners[0].kubernetes.identity[0].namespace: \"a.b\" is not a namespace name (lower-case letters, digits and '-')",
    ),
    (
        "{R}executor = \"kubernetes\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"\nprojects = [\"a/*\"]\nenvironment = [\"AWS_ROLE_ARN\"]",
        "config.toml:9:16: invalid value for runners[0].kubernetes.identity[0].environment[0]: expected KEY=VALUE, found \"AWS_ROLE_ARN\"",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes]\nservice_account = \"deploy\"\n[[runners.kubernetes.identity]]\nservice_account = \"deploy\"\nprojects = [\"a/*\"]",
        "config.toml:9:19: invalid value for runners[0].kubernetes.identity[0].service_account: \"deploy\" is also the runner's service_account: jobs that match no rule would run as it; give the rule an account of its own",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes.projected_token]\naudience = \"sts.amazonaws.com\"\npath = \"token\"",
        "config.toml:8:8: invalid value for runners[0].kubernetes.projected_token.path: expected an absolute file path below a directory, such as \"/var/run/secrets/eks.amazonaws.com/serviceaccount/token\", found \"token\"",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes.projected_token]\naudience = \"sts.amazonaws.com\"\npath = \"/var/run/t/token\"\nexpiration_seconds = 60",
        "config.toml:9:22: invalid value for runners[0].kubernetes.projected_token.expiration_seconds: Kubernetes needs at least 600 seconds, found 60",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes.projected_token]\npath = \"/var/run/t/token\"",
        "config.toml:6:21: missing key runners[0].kubernetes.projected_token.audience",
    ),
    (
        "{R}executor = \"kubernetes\"\n[runners.kubernetes.id_token]\naudience = \"oar\"\nissuer = \"not a url\"",
        "config.toml:8:10: invalid value for runners[0].kubernetes.id_token.issuer: expected a URL such as \"https://gitlab.example.com\", found \"not a url\"",
    ),
];

#[test]
fn broken_configs_name_file_line_and_key() {
    let mut failures = Vec::new();
    for (text, expected) in CASES {
        let text = text.replace("{R}", RUNNER);
        let actual = match parse_str(&text, Path::new("config.toml")) {
            Ok(_) => "parsed without error".to_owned(),
            Err(e) => e.to_string(),
        };
        if actual != *expected {
            failures.push(format!(
                "input:\n{text}\n  expected: {expected}\n  actual:   {actual}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn errors_expose_location_key_and_cause() {
    let text = format!(
        "{RUNNER}executor = \"kubernetes\"\n[runners.kubernetes]\npod_labels_overwrite_allowed = \"[\""
    );
    let err = parse_str(&text, Path::new("/etc/oar/config.toml")).unwrap_err();
    let location = err.location().unwrap();
    assert_eq!(location.file, Path::new("/etc/oar/config.toml"));
    assert_eq!(location.line, Some(7));
    assert_eq!(
        err.key().unwrap().to_string(),
        "runners[0].kubernetes.pod_labels_overwrite_allowed"
    );
    assert!(matches!(err, ConfigError::InvalidRegex { .. }));
    // The regex compiler's explanation is the error's source.
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("unclosed character class"), "{source}");
}

#[test]
fn bad_input_never_panics() {
    // Every prefix of a realistic file is either valid or a located error.
    let text = include_str!("fixtures/realistic.toml");
    for end in (0..text.len())
        .filter(|i| text.is_char_boundary(*i))
        .step_by(7)
    {
        if let Err(e) = parse_str(&text[..end], Path::new("config.toml")) {
            assert!(e.to_string().starts_with("config.toml"), "{e}");
        }
    }
}
