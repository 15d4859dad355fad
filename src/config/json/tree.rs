//! Configuration, step 1 for EasyProxy's JSON file: the text read into a tree that keeps every member in file order, duplicates included, so each problem can be named by its key.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value as written. Unlike `serde_json::Value`, an object keeps a
/// repeated key (a mistake worth reporting, as TOML does), and a number
/// keeps whether it was whole.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Node {
    /// What the value is, for "expected X, found Y" messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "true/false",
            Node::Int(_) => "a whole number",
            Node::Float(_) => "a floating-point number",
            Node::Str(_) => "a string",
            Node::List(_) => "a list",
            Node::Object(_) => "an object",
        }
    }
}

/// Parses JSON text (a leading byte-order mark allowed); a syntax error is
/// one message with its line and column.
pub(super) fn parse(text: &str) -> Result<Node, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    serde_json::from_str(text).map_err(|e| syntax_error(&e))
}

/// `line L, column C: message`, as the TOML front-end says it.
fn syntax_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&suffix).unwrap_or(&full);
    if e.line() == 0 {
        msg.to_string()
    } else {
        format!("line {}, column {}: {msg}", e.line(), e.column())
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Node, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// Builds a [`Node`] from whatever serde_json reads (its recursion limit
/// bounds the depth).
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(i128::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(i128::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, Node>()? {
            members.push(member);
        }
        Ok(Node::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_duplicates_and_number_kinds() {
        let n = parse("\u{feff} {\"a\": 1, \"a\": -2, \"b\": [1.5, null, true, \"x\"]}").unwrap();
        let Node::Object(m) = n else { panic!("{n:?}") };
        assert_eq!(m[0], ("a".to_string(), Node::Int(1)));
        assert_eq!(m[1], ("a".to_string(), Node::Int(-2)));
        assert_eq!(
            m[2].1,
            Node::List(vec![
                Node::Float(1.5),
                Node::Null,
                Node::Bool(true),
                Node::Str("x".into())
            ])
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let e = parse("{\n  \"a\": 1,\n  \"b\" 2\n}").unwrap_err();
        assert!(e.starts_with("line 3, column 7: expected `:`"), "{e}");
        assert!(parse("{} x").unwrap_err().contains("trailing characters"));
        let deep = "[".repeat(10_000);
        assert!(parse(&deep).unwrap_err().contains("recursion limit"));
    }
}
