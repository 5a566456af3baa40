//! What a task is made of, as the agent hands it to the runtime, and the checks made before
//! anything is created for it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use super::error::RuntimeError;
use super::health::HealthCheck;

/// One task to run as a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// The task id: it names the task's folder in the runtime's state directory, so it must
    /// be a plain file name.
    pub id: String,
    /// Docker's task name (`<service>.<slot>.<id>`): in errors, in `SHOAL_TASK_NAME` and in
    /// the task's /etc/hosts.
    pub name: String,
    pub service: String,
    /// The node id, for `SHOAL_NODE`.
    pub node: String,
    /// The task's hostname (its own UTS namespace), in /etc/hostname and /etc/hosts.
    pub hostname: String,
    /// The program and its arguments; the program is looked up in the task's `PATH`.
    pub command: Vec<String>,
    /// The task's environment (the agent's own is not inherited).
    pub env: BTreeMap<String, String>,
    /// The task's addresses on its networks, for /etc/hosts and `SHOAL_ADDRESSES`.
    pub addresses: Vec<Ipv4Addr>,
    /// The network namespace the agent created for the task and put its interfaces in.
    pub netns: PathBuf,
    /// Where stdout and stderr are appended.
    pub log: PathBuf,
    pub health: Option<HealthCheck>,
}

/// Docker's `PATH` for a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl TaskSpec {
    /// The whole environment of the task's process: `PATH`, `HOSTNAME` and `HOME` defaults
    /// (as Docker gives a container), the spec's variables, then the runtime's `SHOAL_*`
    /// ones, which a spec cannot override: they say who the task is.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([
            ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
            ("HOSTNAME".to_owned(), self.hostname.clone()),
            ("HOME".to_owned(), "/root".to_owned()),
        ]);
        env.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let addresses: Vec<String> = self.addresses.iter().map(Ipv4Addr::to_string).collect();
        env.extend([
            ("SHOAL_TASK_NAME".to_owned(), self.name.clone()),
            ("SHOAL_TASK_ID".to_owned(), self.id.clone()),
            ("SHOAL_NODE".to_owned(), self.node.clone()),
            ("SHOAL_SERVICE".to_owned(), self.service.clone()),
            ("SHOAL_ADDRESSES".to_owned(), addresses.join(" ")),
        ]);
        env
    }

    /// Checks what would otherwise fail half-way, after files were created or in the child
    /// where errors lose their words.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let problem = |problem: String| RuntimeError::Spec {
            task: self.label(),
            problem,
        };
        if self.id.is_empty()
            || self.id == "."
            || self.id == ".."
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(problem(format!(
                "id {:?} cannot name its folder: use letters, digits, '-', '_' and '.'",
                self.id
            )));
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return Err(problem(
                "no command: give the program to run and its arguments".into(),
            ));
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err(problem(
                "a command argument contains a NUL byte: remove it".into(),
            ));
        }
        // HOST_NAME_MAX is 64 on Linux; the characters keep /etc/hosts parseable.
        if self.hostname.is_empty()
            || self.hostname.len() > 64
            || !self
                .hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(problem(format!(
                "hostname {:?} is not usable: 1 to 64 letters, digits, '-', '_' or '.'",
                self.hostname
            )));
        }
        if self.name.chars().any(|c| c.is_whitespace() || c == '\0') {
            return Err(problem(format!(
                "name {:?} contains white space: it must be one word for /etc/hosts",
                self.name
            )));
        }
        for (key, value) in &self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(problem(format!(
                    "environment variable {key:?} is not a valid name: no '=' and no NUL"
                )));
            }
            if value.contains('\0') {
                return Err(problem(format!(
                    "environment variable {key} contains a NUL byte: remove it"
                )));
            }
        }
        Ok(())
    }

    /// How errors call the task: its name, or its id when it has none.
    pub(super) fn label(&self) -> String {
        if self.name.is_empty() {
            self.id.clone()
        } else {
            self.name.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec {
            id: "abc".into(),
            name: "web.1.abc".into(),
            service: "web".into(),
            node: "n1".into(),
            hostname: "abc".into(),
            command: vec!["sleep".into(), "1".into()],
            env: BTreeMap::from([("A".into(), "1".into()), ("SHOAL_NODE".into(), "x".into())]),
            addresses: vec![Ipv4Addr::new(10, 0, 1, 5), Ipv4Addr::new(10, 0, 2, 7)],
            netns: "/run/netns/x".into(),
            log: "/tmp/x.log".into(),
            health: None,
        }
    }

    #[test]
    fn environment_has_defaults_the_spec_and_identity_which_wins() {
        let env = spec().environment();
        assert_eq!(env["PATH"], DEFAULT_PATH);
        assert_eq!(env["HOSTNAME"], "abc");
        assert_eq!(env["A"], "1");
        assert_eq!(env["SHOAL_NODE"], "n1");
        assert_eq!(env["SHOAL_TASK_NAME"], "web.1.abc");
        assert_eq!(env["SHOAL_TASK_ID"], "abc");
        assert_eq!(env["SHOAL_SERVICE"], "web");
        assert_eq!(env["SHOAL_ADDRESSES"], "10.0.1.5 10.0.2.7");
    }

    #[test]
    fn validation_names_the_task_and_the_fix() {
        assert!(spec().validate().is_ok());
        let mut bad = spec();
        bad.id = "../etc".into();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.starts_with("task web.1.abc: id"), "{err}");
        let mut bad = spec();
        bad.command.clear();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("no command")
        );
        let mut bad = spec();
        bad.hostname = "a b".into();
        assert!(bad.validate().is_err());
        let mut bad = spec();
        bad.env.insert("X=Y".into(), "1".into());
        assert!(bad.validate().is_err());
    }
}
