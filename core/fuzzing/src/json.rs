//! Structure-aware mutations of JSON documents: the input still parses as JSON, so the mutation
//! reaches the deserializer and the code that uses the values.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};

/// One edit of a JSON value, applied at one of its nodes (chosen by an [`Index`] over the nodes
/// in document order).
#[derive(Debug, Clone)]
pub enum Edit {
    /// Replaces the node with another value.
    Replace(Index, Value),
    /// Removes one key of an object node (or one element of an array node).
    Remove(Index, Index),
    /// Repeats the first element of an array node `n` times.
    Repeat(Index, usize),
}

/// Values that break assumptions: numbers at the edges of every integer type, negative, huge and
/// fractional; strings empty, long, with paths and control characters; other types.
pub fn boundary_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(u32::MAX)),
        Just(json!(u64::from(u32::MAX) + 1)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(1.5)),
        Just(json!(1e308)),
        (0u64..1000).prop_map(|n| json!(n)),
        Just(json!("")),
        Just(json!("x".repeat(4096))),
        Just(json!("../../../../etc/passwd")),
        Just(json!("/dev/zero")),
        Just(json!("\u{0}\n\u{7f}")),
        Just(json!("unknown_name")),
        Just(Value::Null),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
        Just(json!([0, 1, 2])),
    ]
}

/// A random [`Edit`].
pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        6 => (any::<Index>(), boundary_value()).prop_map(|(i, v)| Edit::Replace(i, v)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, k)| Edit::Remove(i, k)),
        1 => (any::<Index>(), prop_oneof![Just(2usize), Just(100), Just(5_000)])
            .prop_map(|(i, n)| Edit::Repeat(i, n)),
    ]
}

fn count(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count).sum(),
        Value::Object(map) => map.values().map(count).sum(),
        _ => 0,
    }
}

/// Applies `f` to the node at `target` (document order).
fn with_node(value: &mut Value, target: usize, f: impl FnOnce(&mut Value)) {
    fn walk(value: &mut Value, target: &mut usize, f: &mut Option<impl FnOnce(&mut Value)>) {
        if *target == 0 {
            if let Some(f) = f.take() {
                f(value);
            }
            return;
        }
        *target -= 1;
        match value {
            Value::Array(items) => {
                for v in items {
                    walk(v, target, f);
                    if f.is_none() {
                        return;
                    }
                }
            }
            Value::Object(map) => {
                for v in map.values_mut() {
                    walk(v, target, f);
                    if f.is_none() {
                        return;
                    }
                }
            }
            _ => {}
        }
    }
    let mut target = target;
    walk(value, &mut target, &mut Some(f));
}

/// Applies one edit in place.
pub fn apply(value: &mut Value, edit: &Edit) {
    let nodes = count(value);
    match edit {
        Edit::Replace(at, new) => with_node(value, at.index(nodes), |v| *v = new.clone()),
        Edit::Remove(at, which) => with_node(value, at.index(nodes), |v| match v {
            Value::Array(items) if !items.is_empty() => {
                items.remove(which.index(items.len()));
            }
            Value::Object(map) if !map.is_empty() => {
                let key = map.keys().nth(which.index(map.len())).cloned();
                if let Some(key) = key {
                    map.remove(&key);
                }
            }
            _ => {}
        }),
        Edit::Repeat(at, n) => with_node(value, at.index(nodes), |v| {
            if let Value::Array(items) = v
                && let Some(first) = items.first().cloned()
            {
                items.extend(std::iter::repeat_n(first, *n));
            }
        }),
    }
}

/// `seed` with one to three random edits.
pub fn mutated(seed: Value) -> impl Strategy<Value = Value> {
    proptest::collection::vec(edit(), 1..=3).prop_map(move |edits| {
        let mut value = seed.clone();
        for edit in &edits {
            apply(&mut value, edit);
        }
        value
    })
}

/// One of `seeds` with one to three random edits.
pub fn mutated_from(seeds: Vec<Value>) -> impl Strategy<Value = Value> {
    assert!(!seeds.is_empty(), "mutated_from needs at least one seed");
    (any::<Index>(), proptest::collection::vec(edit(), 1..=3)).prop_map(move |(pick, edits)| {
        let mut value = seeds
            .get(pick.index(seeds.len()))
            .cloned()
            .unwrap_or(Value::Null);
        for edit in &edits {
            apply(&mut value, edit);
        }
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_reaches_nested_nodes_in_document_order() {
        let mut v = json!({"a": [1, {"b": 2}], "c": 3});
        // Nodes: root 0, a 1, 1 -> 2, {"b"} 3, b 4, c 5.
        with_node(&mut v, 4, |n| *n = json!("x"));
        assert_eq!(v, json!({"a": [1, {"b": "x"}], "c": 3}));
        assert_eq!(count(&v), 6);
    }
}
