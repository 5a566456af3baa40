//! Placement constraints, Docker's syntax: `node.hostname==n1`, `node.role!=manager`,
//! `node.labels.zone==east`, `node.id==…`. Kept as text in specs, parsed on the way in so a
//! bad one is refused when the service is created, not when it is scheduled.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::{Node, Role};

/// What a constraint looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    Id,
    Hostname,
    Role,
    Label(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    pub field: Field,
    pub equal: bool,
    pub value: String,
}

/// Why a constraint does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "constraint {text:?}: {why} (write it as node.hostname==NAME, node.role!=manager or node.labels.KEY==VALUE)"
)]
pub struct ConstraintError {
    pub text: String,
    pub why: &'static str,
}

impl FromStr for Constraint {
    type Err = ConstraintError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why| ConstraintError {
            text: text.to_owned(),
            why,
        };
        let (left, right, equal) = match (text.split_once("=="), text.split_once("!=")) {
            (Some((l, r)), None) => (l, r, true),
            (None, Some((l, r))) => (l, r, false),
            _ => return Err(bad("it needs exactly one == or !=")),
        };
        let (left, value) = (left.trim(), right.trim());
        if value.is_empty() {
            return Err(bad("the value is empty"));
        }
        let field = match left {
            "node.id" => Field::Id,
            "node.hostname" => Field::Hostname,
            "node.role" => {
                if !matches!(value, "manager" | "worker") {
                    return Err(bad("node.role is manager or worker"));
                }
                Field::Role
            }
            _ => match left.strip_prefix("node.labels.") {
                Some(key) if !key.is_empty() => Field::Label(key.to_owned()),
                _ => return Err(bad("unknown attribute")),
            },
        };
        Ok(Constraint {
            field,
            equal,
            value: value.to_owned(),
        })
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = match &self.field {
            Field::Id => "node.id".to_owned(),
            Field::Hostname => "node.hostname".to_owned(),
            Field::Role => "node.role".to_owned(),
            Field::Label(key) => format!("node.labels.{key}"),
        };
        let op = if self.equal { "==" } else { "!=" };
        write!(f, "{left}{op}{}", self.value)
    }
}

impl Constraint {
    /// Whether `node` satisfies it. A missing label is "not equal" (as in Docker).
    pub fn matches(&self, node: &Node) -> bool {
        let actual = match &self.field {
            Field::Id => Some(node.id.as_str()),
            Field::Hostname => Some(node.hostname.as_str()),
            Field::Role => Some(match node.role {
                Role::Manager => "manager",
                Role::Worker => "worker",
            }),
            Field::Label(key) => node.labels.get(key).map(String::as_str),
        };
        (actual == Some(self.value.as_str())) == self.equal
    }
}

impl Serialize for Constraint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::manager::model::{Availability, NodeStatus};

    fn node(hostname: &str, role: Role, labels: &[(&str, &str)]) -> Node {
        Node {
            id: format!("id-{hostname}"),
            hostname: hostname.into(),
            role,
            availability: Availability::Active,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            addr: "192.168.77.1".parse().unwrap(),
            status: NodeStatus::Ready,
            ingress_ip: None,
        }
    }

    #[test]
    fn constraints_parse_match_and_print_back() {
        let n1 = node("n1", Role::Manager, &[("zone", "east")]);
        let n2 = node("n2", Role::Worker, &[]);
        let cases = [
            ("node.hostname==n1", true, false),
            ("node.hostname != n1", false, true),
            ("node.role==manager", true, false),
            ("node.role!=manager", false, true),
            ("node.labels.zone==east", true, false),
            ("node.labels.zone!=east", false, true),
            ("node.id==id-n2", false, true),
        ];
        for (text, on_n1, on_n2) in cases {
            let c: Constraint = text.parse().unwrap();
            assert_eq!((c.matches(&n1), c.matches(&n2)), (on_n1, on_n2), "{text}");
            assert_eq!(c.to_string().parse::<Constraint>().unwrap(), c);
        }
    }

    #[test]
    fn bad_constraints_are_refused_with_the_text_and_the_form() {
        for text in [
            "node.hostname",
            "node.hostname==",
            "node.color==red",
            "node.role==boss",
            "a==b!=c",
            "node.labels.==x",
        ] {
            let err = text.parse::<Constraint>().unwrap_err().to_string();
            assert!(
                err.contains(text) && err.contains("node.hostname==NAME"),
                "{err}"
            );
        }
        let json: Result<Constraint, _> = serde_json::from_str("\"node.zone==x\"");
        assert!(json.is_err());
    }
}
