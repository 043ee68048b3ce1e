//! A writer of POSIX shell scripts (bash, dash, busybox ash all run what it writes).
//!
//! Values are single-quoted, so the shell never re-expands them; only commands the user wrote
//! are run as written.

/// Bold green (notices, echoed commands).
pub const GREEN: &str = "\x1b[32;1m";
/// Yellow (warnings).
pub const YELLOW: &str = "\x1b[0;33m";
/// Bold red (errors).
pub const RED: &str = "\x1b[31;1m";
/// Bold cyan (section headers).
pub const CYAN: &str = "\x1b[36;1m";
/// Reset.
pub const RESET: &str = "\x1b[0;m";

/// Quotes `s` for any POSIX shell. NUL bytes cannot be passed to a shell and are dropped.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./:@%+=,-".contains(&b))
    {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("'\\''"),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Builds a script line by line.
#[derive(Debug, Default, Clone)]
pub struct ScriptWriter {
    buf: String,
    indent: usize,
}

impl ScriptWriter {
    /// Empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a raw line (already shell syntax).
    pub fn line(&mut self, line: impl AsRef<str>) -> &mut Self {
        for _ in 0..self.indent {
            self.buf.push_str("  ");
        }
        self.buf.push_str(line.as_ref());
        self.buf.push('\n');
        self
    }

    /// Appends a command made of arguments, each quoted.
    pub fn command<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let line: Vec<String> = args.into_iter().map(|a| quote(a.as_ref())).collect();
        self.line(line.join(" "))
    }

    /// `export KEY='value'`.
    pub fn export(&mut self, key: &str, value: &str) -> &mut Self {
        self.line(format!("export {key}={}", quote(value)))
    }

    /// Prints `text` in `color` (a line of its own).
    pub fn print_colored(&mut self, color: &str, text: &str) -> &mut Self {
        self.line(format!(
            "printf '%s\\n' {}",
            quote(&format!("{color}{text}{RESET}"))
        ))
    }

    /// Prints a plain line.
    pub fn print(&mut self, text: &str) -> &mut Self {
        self.line(format!("printf '%s\\n' {}", quote(text)))
    }

    /// Prints a notice in bold green.
    pub fn notice(&mut self, text: &str) -> &mut Self {
        self.print_colored(GREEN, text)
    }

    /// Prints a warning in yellow.
    pub fn warning(&mut self, text: &str) -> &mut Self {
        self.print_colored(YELLOW, text)
    }

    /// Prints an error in bold red.
    pub fn error(&mut self, text: &str) -> &mut Self {
        self.print_colored(RED, text)
    }

    /// Opens `if <cond>; then`.
    pub fn if_(&mut self, cond: &str) -> &mut Self {
        self.line(format!("if {cond}; then"));
        self.indent += 1;
        self
    }

    /// `else`.
    pub fn else_(&mut self) -> &mut Self {
        self.indent = self.indent.saturating_sub(1);
        self.line("else");
        self.indent += 1;
        self
    }

    /// `fi`.
    pub fn fi(&mut self) -> &mut Self {
        self.indent = self.indent.saturating_sub(1);
        self.line("fi")
    }

    /// `cd 'dir'`.
    pub fn cd(&mut self, dir: &str) -> &mut Self {
        self.line(format!("cd {}", quote(dir)))
    }

    /// `mkdir -p 'dir'`, run only when the directory is not there yet (a process less per
    /// stage on a reused builds directory).
    pub fn mkdir(&mut self, dir: &str) -> &mut Self {
        let q = quote(dir);
        self.line(format!("[ -d {q} ] || mkdir -p {q}"))
    }

    /// `rm -f 'file'...`, run only when one of them exists (most often none does).
    pub fn rm_files(&mut self, files: &[String]) -> &mut Self {
        if files.is_empty() {
            return self;
        }
        let quoted: Vec<String> = files.iter().map(|f| quote(f)).collect();
        let exists: Vec<String> = quoted
            .iter()
            .map(|q| format!("[ -e {q} ] || [ -h {q} ]"))
            .collect();
        self.line(format!(
            "if {}; then rm -f {}; fi",
            exists.join(" || "),
            quoted.join(" ")
        ))
    }

    /// Creates `file` when missing, keeping its contents (`touch` without a process).
    pub fn touch(&mut self, file: &str) -> &mut Self {
        self.line(format!(": >> {}", quote(file)))
    }

    /// Echoes a user command as GitLab does (`$ cmd` in green), then runs it as written.
    pub fn user_command(&mut self, cmd: &str) -> &mut Self {
        let cmd = cmd.trim_end_matches('\n');
        let mut lines = cmd.lines();
        let first = lines.next().unwrap_or("");
        if lines.next().is_some() {
            self.notice(&format!("$ {first} # collapsed multi-line command"));
        } else {
            self.notice(&format!("$ {first}"));
        }
        self.buf.push_str(cmd);
        self.buf.push('\n');
        self
    }

    /// The body written so far.
    pub fn body(&self) -> &str {
        &self.buf
    }

    /// Wraps the body in the stage envelope: TERM exits 1, pipefail when the shell has it,
    /// errexit, no noclobber, and the body evaluated in a subshell reading `/dev/null` so user
    /// commands cannot eat the script. `xtrace` when `debug_trace`.
    ///
    /// The body goes through a variable: when the subshell dies of a signal (an OOM kill),
    /// bash reports it with the subshell's command text, which must not be the whole body
    /// (every exported variable).
    pub fn finish(&self, debug_trace: bool) -> String {
        let mut s = String::new();
        s.push_str("trap 'exit 1' TERM\n\n");
        // bash has pipefail; other shells are asked (a subshell, so not for bash).
        s.push_str("if [ -n \"${BASH_VERSION:-}\" ]; then set -o pipefail; else case \"$(set -o)\" in *pipefail*) set -o pipefail;; esac; fi\n");
        if debug_trace {
            s.push_str("set -o xtrace\n");
        }
        s.push_str("set -o errexit\nset +o noclobber\n");
        s.push_str(&format!(
            "__oar_stage={}\n(trap 'exit 1' TERM; eval \"$__oar_stage\") < /dev/null\nexit 0\n",
            quote(&self.buf)
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("plain-value_1.2/x:y@z"), "plain-value_1.2/x:y@z");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("$HOME `x` \"y\""), "'$HOME `x` \"y\"'");
        assert_eq!(quote("a\0b"), "'ab'");
    }

    #[test]
    fn quoted_values_survive_a_real_shell() {
        let tricky = "it's $HOME `id` \"q\" \\ \n new line \x1b[0m ünï";
        let mut w = ScriptWriter::new();
        w.export("V", tricky).line("printf '%s' \"$V\"");
        for shell in ["bash", "sh"] {
            let out = std::process::Command::new(shell)
                .arg("-c")
                .arg(w.finish(false))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{shell}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&out.stdout), tricky, "{shell}");
        }
    }

    #[test]
    fn file_helpers_create_and_remove_only_what_they_must() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a b/c");
        let (d, f, g) = (
            d.to_string_lossy().into_owned(),
            format!("{}/it's", d.display()),
            format!("{}/link", d.display()),
        );
        let mut w = ScriptWriter::new();
        w.mkdir(&d).mkdir(&d).touch(&f);
        w.line(format!("printf x >> {}", quote(&f))).touch(&f);
        w.line(format!("ln -s /nonexistent {}", quote(&g)));
        w.line(format!("cat {}; echo", quote(&f)));
        w.rm_files(&[f.clone(), g.clone(), format!("{d}/missing")]);
        w.rm_files(&[format!("{d}/missing")]);
        w.line(format!("ls -A {}", quote(&d)));
        for shell in ["bash", "sh"] {
            let _ = std::fs::remove_dir_all(dir.path().join("a b"));
            let out = std::process::Command::new(shell)
                .arg("-c")
                .arg(w.finish(false))
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell}: {out:?}");
            // touch kept the byte; rm removed the file and the dangling link.
            assert_eq!(String::from_utf8_lossy(&out.stdout), "x\n", "{shell}");
        }
    }

    #[test]
    fn pipefail_is_on_where_the_shell_has_it() {
        let mut w = ScriptWriter::new();
        w.line("false | true");
        let bash = std::process::Command::new("bash")
            .arg("-c")
            .arg(w.finish(false))
            .output()
            .unwrap();
        assert_eq!(bash.status.code(), Some(1));
    }

    #[test]
    fn envelope_stops_at_first_failure_and_keeps_the_exit_code() {
        let mut w = ScriptWriter::new();
        w.user_command("echo one")
            .user_command("(exit 7)")
            .user_command("echo never");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(w.finish(false))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(7));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("one") && !stdout.contains("never\n"),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("{GREEN}$ echo one{RESET}")));
    }

    #[test]
    fn user_commands_cannot_read_the_script() {
        let mut w = ScriptWriter::new();
        w.user_command("cat").user_command("echo after");
        let out = std::process::Command::new("bash")
            .stdin(std::process::Stdio::piped())
            .arg("-c")
            .arg(w.finish(false))
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("after"));
    }
}
