//! Malformed pipelines: each fails with exactly this message, naming file and line.

use oar_pipeline::{Context, MemorySource, Pipeline};

fn ctx() -> Context {
    Context::with_variables([
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_COMMIT_REF_NAME", "main"),
        ("CI_PIPELINE_SOURCE", "push"),
    ])
}

fn error_of(files: &[(&str, &str)]) -> String {
    let mut source = MemorySource::new();
    for (p, t) in files {
        source.insert(p, t);
    }
    let ctx = ctx();
    match Pipeline::load(&source, ".gitlab-ci.yml", &ctx).and_then(|p| p.plan(&ctx)) {
        Ok(_) => "no error".into(),
        Err(e) => e.to_string(),
    }
}

/// A case: its name, the files (path, text), the exact error.
type Case = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const CASES: &[Case] = &[
    (
        "bad yaml",
        &[(".gitlab-ci.yml", "job:\n  script: [a\n")],
        ".gitlab-ci.yml:3: invalid YAML: while parsing a flow sequence, expected ',' or ']'",
    ),
    (
        "tab indentation",
        &[(".gitlab-ci.yml", "job:\n\tscript: x\n")],
        ".gitlab-ci.yml:2: invalid YAML: tabs disallowed within this context (block indentation)",
    ),
    (
        "duplicate key",
        &[(".gitlab-ci.yml", "job:\n  script: a\n  script: b\n")],
        ".gitlab-ci.yml:3: invalid YAML: duplicate key \"script\"",
    ),
    (
        "unknown tag",
        &[(".gitlab-ci.yml", "job:\n  script: !include x\n")],
        ".gitlab-ci.yml:2: invalid YAML: unknown tag !include",
    ),
    (
        "root not a hash",
        &[(".gitlab-ci.yml", "- a\n- b\n")],
        ".gitlab-ci.yml:1: keyword \"root\": the configuration must be a hash, found an array",
    ),
    (
        "unknown job keyword",
        &[(".gitlab-ci.yml", "job:\n  script: x\n  scirpt: y\n")],
        ".gitlab-ci.yml:3: job \"job\": unknown keyword \"scirpt\"",
    ),
    (
        "job not a hash",
        &[(".gitlab-ci.yml", "job: echo\n")],
        ".gitlab-ci.yml:1: job \"job\": config should be a hash, found a string",
    ),
    (
        "no script",
        &[(".gitlab-ci.yml", "job:\n  stage: test\n")],
        ".gitlab-ci.yml:1: job \"job\": config should implement the script: or trigger: keyword",
    ),
    (
        "wrong type when",
        &[(".gitlab-ci.yml", "job:\n  script: x\n  when: sometimes\n")],
        ".gitlab-ci.yml:3: job \"job\": keyword \"when\": unknown value \"sometimes\"; expected one of: on_success, on_failure, always, manual, delayed, never",
    ),
    (
        "wrong type script",
        &[(".gitlab-ci.yml", "job:\n  script: {a: b}\n")],
        ".gitlab-ci.yml:2: job \"job\": keyword \"script\": expected a string or an array of strings, found a hash",
    ),
    (
        "wrong type allow_failure",
        &[(
            ".gitlab-ci.yml",
            "job:\n  script: x\n  allow_failure: maybe\n",
        )],
        ".gitlab-ci.yml:3: job \"job\": keyword \"allow_failure\": expected a boolean or a hash with exit_codes:, found a string",
    ),
    (
        "wrong type retry",
        &[(".gitlab-ci.yml", "job:\n  script: x\n  retry: 5\n")],
        ".gitlab-ci.yml:3: job \"job\": keyword \"retry\": retry max must be 0, 1 or 2",
    ),
    (
        "bad timeout",
        &[(".gitlab-ci.yml", "job:\n  script: x\n  timeout: soon\n")],
        ".gitlab-ci.yml:3: job \"job\": keyword \"timeout\": \"soon\" is not a duration (like 1h 30m)",
    ),
    (
        "unknown stage",
        &[(
            ".gitlab-ci.yml",
            "stages: [build]\njob:\n  stage: test\n  script: x\n",
        )],
        ".gitlab-ci.yml:3: job \"job\": keyword \"stage\": chosen stage \"test\" does not exist; available stages are .pre, build, .post",
    ),
    (
        "unknown global keyword in default",
        &[(".gitlab-ci.yml", "default:\n  stage: x\n")],
        ".gitlab-ci.yml:2: keyword \"default\": unknown keyword \"stage\"; expected one of: after_script, artifacts, before_script, cache, hooks, id_tokens, image, interruptible, retry, services, tags, timeout",
    ),
    (
        "extends cycle",
        &[(
            ".gitlab-ci.yml",
            ".a:\n  extends: .b\n.b:\n  extends: .a\njob:\n  extends: .a\n  script: x\n",
        )],
        ".gitlab-ci.yml:4: job \".b\": keyword \"extends\": circular dependency detected: .a -> .b -> .a",
    ),
    (
        "extends self",
        &[(".gitlab-ci.yml", "job:\n  extends: job\n  script: x\n")],
        ".gitlab-ci.yml:2: job \"job\": keyword \"extends\": circular dependency detected: job -> job",
    ),
    (
        "missing extends target",
        &[(".gitlab-ci.yml", "job:\n  extends: .nope\n  script: x\n")],
        ".gitlab-ci.yml:2: job \"job\": keyword \"extends\": unknown job \".nope\" in extends",
    ),
    (
        "missing reference",
        &[(
            ".gitlab-ci.yml",
            "job:\n  script: !reference [.nope, script]\n",
        )],
        ".gitlab-ci.yml:2: keyword \"!reference\": [.nope, script] could not be found",
    ),
    (
        "needs cycle",
        &[(
            ".gitlab-ci.yml",
            "a:\n  script: x\n  needs: [b]\nb:\n  script: x\n  needs: [a]\n",
        )],
        ".gitlab-ci.yml:3: job \"a\": keyword \"needs\": circular dependency detected in needs: a, b",
    ),
    (
        "missing needs target",
        &[(".gitlab-ci.yml", "a:\n  script: x\n  needs: [build]\n")],
        ".gitlab-ci.yml:3: job \"a\": keyword \"needs\": undefined need: \"build\"",
    ),
    (
        "needs later stage",
        &[(
            ".gitlab-ci.yml",
            "a:\n  stage: build\n  script: x\n  needs: [b]\nb:\n  stage: test\n  script: x\n",
        )],
        ".gitlab-ci.yml:4: job \"a\": keyword \"needs\": \"b\" is in a later stage (test) than this job (build)",
    ),
    (
        "missing dependency",
        &[(
            ".gitlab-ci.yml",
            "a:\n  script: x\n  dependencies: [nope]\n",
        )],
        ".gitlab-ci.yml:1: job \"a\": keyword \"dependencies\": undefined dependency: \"nope\"",
    ),
    (
        "bad rules expression",
        &[(
            ".gitlab-ci.yml",
            "a:\n  script: x\n  rules:\n    - if: $A = \"x\"\n",
        )],
        ".gitlab-ci.yml:4: job \"a\": keyword \"rules:if\": invalid expression \"$A = \\\"x\\\"\": unexpected '=' at column 4",
    ),
    (
        "bad rules regex",
        &[(
            ".gitlab-ci.yml",
            "a:\n  script: x\n  rules:\n    - if: $A =~ /x/z\n",
        )],
        ".gitlab-ci.yml:4: job \"a\": keyword \"rules:if\": invalid expression \"$A =~ /x/z\": unknown regex flag 'z' at column 7",
    ),
    (
        "unknown rules keyword",
        &[(
            ".gitlab-ci.yml",
            "a:\n  script: x\n  rules:\n    - iff: $A\n",
        )],
        ".gitlab-ci.yml:4: job \"a\": keyword \"rules\": unknown keyword \"iff\"; expected one of: if, changes, exists, when, start_in, allow_failure, variables, needs, interruptible",
    ),
    (
        "rules with only",
        &[(
            ".gitlab-ci.yml",
            "a:\n  script: x\n  rules: [{when: always}]\n  only: [main]\n",
        )],
        ".gitlab-ci.yml:1: job \"a\": keyword \"rules\": rules: cannot be used with only: or except:",
    ),
    (
        "bad workflow when",
        &[(
            ".gitlab-ci.yml",
            "workflow:\n  rules:\n    - when: manual\na:\n  script: x\n",
        )],
        ".gitlab-ci.yml:3: keyword \"workflow:rules:when\": unknown value \"manual\"; expected one of: always, never",
    ),
    (
        "include missing file",
        &[(".gitlab-ci.yml", "include: ci/nope.yml\n")],
        ".gitlab-ci.yml:1: cannot read ci/nope.yml",
    ),
    (
        "include remote",
        &[(
            ".gitlab-ci.yml",
            "include:\n  - remote: https://example.com/ci.yml\n",
        )],
        ".gitlab-ci.yml:2: include remote \"https://example.com/ci.yml\" is not available locally; copy the file into the repository and use include:local",
    ),
    (
        "include remote string",
        &[(".gitlab-ci.yml", "include: https://example.com/ci.yml\n")],
        ".gitlab-ci.yml:1: include remote \"https://example.com/ci.yml\" is not available locally; copy the file into the repository and use include:local",
    ),
    (
        "include template",
        &[(
            ".gitlab-ci.yml",
            "include:\n  - template: Auto-DevOps.gitlab-ci.yml\n",
        )],
        ".gitlab-ci.yml:2: include template \"Auto-DevOps.gitlab-ci.yml\" is not available locally; copy the file into the repository and use include:local",
    ),
    (
        "include project",
        &[(
            ".gitlab-ci.yml",
            "include:\n  - project: group/proj\n    file: ci.yml\n",
        )],
        ".gitlab-ci.yml:2: include project \"group/proj\" is not available locally; copy the file into the repository and use include:local",
    ),
    (
        "include component",
        &[(
            ".gitlab-ci.yml",
            "include:\n  - component: gitlab.com/org/comp/build@1.0\n",
        )],
        ".gitlab-ci.yml:2: include component \"gitlab.com/org/comp/build@1.0\" is not available locally; copy the file into the repository and use include:local",
    ),
    (
        "include bad extension",
        &[(".gitlab-ci.yml", "include: ci/build.txt\n")],
        ".gitlab-ci.yml:1: keyword \"include\": local file \"ci/build.txt\" does not have a .yml or .yaml extension",
    ),
    (
        "include outside repo",
        &[(".gitlab-ci.yml", "include: ../secret.yml\n")],
        ".gitlab-ci.yml:1: keyword \"include\": local file \"../secret.yml\" must be a path inside the repository",
    ),
    (
        "include cycle",
        &[
            (".gitlab-ci.yml", "include: a.yml\n"),
            ("a.yml", "include: b.yml\n"),
            ("b.yml", "include: a.yml\n"),
        ],
        "b.yml:1: keyword \"include\": include cycle: .gitlab-ci.yml -> a.yml -> b.yml -> a.yml",
    ),
    (
        "error in included file",
        &[
            (".gitlab-ci.yml", "include: ci/a.yml\n"),
            ("ci/a.yml", "\njob:\n  script: x\n  when: later\n"),
        ],
        "ci/a.yml:4: job \"job\": keyword \"when\": unknown value \"later\"; expected one of: on_success, on_failure, always, manual, delayed, never",
    ),
    (
        "include unknown keyword",
        &[(".gitlab-ci.yml", "include:\n  - locale: a.yml\n")],
        ".gitlab-ci.yml:2: keyword \"include\": unknown keyword \"locale\"; expected local, remote, project, template, component, inputs or rules",
    ),
    (
        "input missing",
        &[
            (".gitlab-ci.yml", "include:\n  - local: t.yml\n"),
            (
                "t.yml",
                "spec:\n  inputs:\n    env:\n---\njob:\n  script: echo $[[ inputs.env ]]\n",
            ),
        ],
        ".gitlab-ci.yml:2: keyword \"inputs:env\": required value has not been provided",
    ),
    (
        "input wrong type",
        &[
            (
                ".gitlab-ci.yml",
                "include:\n  - local: t.yml\n    inputs:\n      n: many\n",
            ),
            (
                "t.yml",
                "spec:\n  inputs:\n    n:\n      type: number\n---\njob:\n  script: echo $[[ inputs.n ]]\n",
            ),
        ],
        ".gitlab-ci.yml:4: keyword \"inputs:n\": provided value is not a number (found a string)",
    ),
    (
        "input not in options",
        &[
            (
                ".gitlab-ci.yml",
                "include:\n  - local: t.yml\n    inputs:\n      env: qa\n",
            ),
            (
                "t.yml",
                "spec:\n  inputs:\n    env:\n      options: [dev, prod]\n---\njob:\n  script: echo $[[ inputs.env ]]\n",
            ),
        ],
        ".gitlab-ci.yml:4: keyword \"inputs:env\": `qa` cannot be used because it is not in the list of allowed options (dev, prod)",
    ),
    (
        "input regex",
        &[
            (
                ".gitlab-ci.yml",
                "include:\n  - local: t.yml\n    inputs:\n      v: abc\n",
            ),
            (
                "t.yml",
                "spec:\n  inputs:\n    v:\n      regex: ^v\\d+$\n---\njob:\n  script: echo $[[ inputs.v ]]\n",
            ),
        ],
        ".gitlab-ci.yml:4: keyword \"inputs:v\": provided value does not match required RegEx pattern ^v\\d+$",
    ),
    (
        "unknown input given",
        &[
            (
                ".gitlab-ci.yml",
                "include:\n  - local: t.yml\n    inputs:\n      nope: x\n",
            ),
            ("t.yml", "spec:\n  inputs:\n---\njob:\n  script: x\n"),
        ],
        ".gitlab-ci.yml:4: keyword \"inputs:nope\": unknown input",
    ),
    (
        "unknown interpolation",
        &[(
            ".gitlab-ci.yml",
            "spec:\n  inputs:\n    a:\n      default: x\n---\njob:\n  script: echo $[[ inputs.b ]]\n",
        )],
        ".gitlab-ci.yml:7: keyword \"inputs\": unknown interpolation key: \"b\"",
    ),
    (
        "unknown input function",
        &[(
            ".gitlab-ci.yml",
            "spec:\n  inputs:\n    a:\n      default: x\n---\njob:\n  script: echo $[[ inputs.a | upcase ]]\n",
        )],
        ".gitlab-ci.yml:7: keyword \"inputs\": unknown input function \"upcase\"",
    ),
    (
        "inputs without spec",
        &[
            (
                ".gitlab-ci.yml",
                "include:\n  - local: t.yml\n    inputs:\n      a: x\n",
            ),
            ("t.yml", "job:\n  script: x\n"),
        ],
        ".gitlab-ci.yml:4: keyword \"inputs:a\": unknown input: the included file has no spec:inputs header",
    ),
    (
        "matrix need no match",
        &[(
            ".gitlab-ci.yml",
            "b:\n  stage: build\n  script: x\n  parallel:\n    matrix:\n      - OS: [linux]\nt:\n  script: x\n  needs:\n    - job: b\n      parallel:\n        matrix:\n          - OS: mac\n",
        )],
        ".gitlab-ci.yml:10: job \"t\": keyword \"needs\": undefined need: \"b\" has no matrix instance matching OS: [mac]",
    ),
    (
        "parallel out of range",
        &[(".gitlab-ci.yml", "a:\n  script: x\n  parallel: 500\n")],
        ".gitlab-ci.yml:3: job \"a\": keyword \"parallel\": parallel must be between 1 and 200",
    ),
    (
        "trigger project",
        &[(".gitlab-ci.yml", "a:\n  trigger: group/other\n")],
        ".gitlab-ci.yml:2: job \"a\": keyword \"trigger\": multi-project pipelines (trigger:project) are not available locally",
    ),
    (
        "run keyword",
        &[(".gitlab-ci.yml", "a:\n  run:\n    - name: x\n")],
        ".gitlab-ci.yml:2: job \"a\": keyword \"run\": run: (CI/CD steps) is not supported; use script:",
    ),
    (
        "delayed without start_in",
        &[(".gitlab-ci.yml", "a:\n  script: x\n  when: delayed\n")],
        ".gitlab-ci.yml:1: job \"a\": keyword \"start_in\": when: delayed needs start_in",
    ),
    (
        "variable options",
        &[(
            ".gitlab-ci.yml",
            "variables:\n  ENV:\n    value: qa\n    options: [dev, prod]\na:\n  script: x\n",
        )],
        ".gitlab-ci.yml:2: keyword \"variables\": variable \"ENV\": value \"qa\" is not one of its options",
    ),
    (
        "variables wrong type",
        &[(".gitlab-ci.yml", "a:\n  script: x\n  variables: [A, B]\n")],
        ".gitlab-ci.yml:3: job \"a\": keyword \"variables\": expected a hash of variables, found an array",
    ),
    (
        "cache key with slash",
        &[(
            ".gitlab-ci.yml",
            "a:\n  script: x\n  cache:\n    key: a/b\n",
        )],
        ".gitlab-ci.yml:4: job \"a\": keyword \"cache\": key cannot contain \"/\" or be \".\"",
    ),
    (
        "spec outside header",
        &[(".gitlab-ci.yml", "spec:\n  inputs: {}\na:\n  script: x\n")],
        ".gitlab-ci.yml:1: keyword \"spec\": spec: must be in a header section that ends with ---",
    ),
];

#[test]
fn malformed_pipelines() {
    let mut problems = Vec::new();
    for (name, files, want) in CASES {
        let got = error_of(files);
        if got != *want {
            problems.push(format!("{name}:\n  got:  {got}\n  want: {want}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
