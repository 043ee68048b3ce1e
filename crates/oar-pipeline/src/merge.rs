//! GitLab's deep merge: hashes merge key by key (the overlay wins), everything else — arrays
//! included — is replaced by the overlay.

use crate::yaml::{Map, Node, Value};

/// Merges `overlay` into `base`.
pub fn deep_merge(base: &mut Map, overlay: Map) {
    for (key, (kloc, value)) in overlay {
        match base.get_mut(&key) {
            Some((bloc, existing)) => {
                if let (Value::Map(b), Value::Map(_)) = (&mut existing.value, &value.value) {
                    let Value::Map(o) = value.value else { continue };
                    deep_merge(b, o);
                    *bloc = kloc;
                } else {
                    *bloc = kloc;
                    *existing = value;
                }
            }
            None => {
                base.insert(key, (kloc, value));
            }
        }
    }
}

/// `deep_merge` for nodes: two hashes merge, otherwise the overlay wins.
pub fn merge_nodes(base: Node, overlay: Node) -> Node {
    match (base.value, overlay.value) {
        (Value::Map(mut b), Value::Map(o)) => {
            deep_merge(&mut b, o);
            Node::new(Value::Map(b), overlay.loc)
        }
        (_, value) => Node::new(value, overlay.loc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse_documents;

    #[test]
    fn hashes_merge_arrays_replace() {
        let a = parse_documents("v: {A: 1, B: 2}\ns: [a, b]\nk: 1\n", "a")
            .unwrap()
            .remove(0);
        let b = parse_documents("v: {B: 3, C: 4}\ns: [c]\n", "b")
            .unwrap()
            .remove(0);
        let (Value::Map(mut a), Value::Map(b)) = (a.value, b.value) else {
            panic!()
        };
        deep_merge(&mut a, b);
        let v = a["v"].1.as_map().unwrap();
        assert_eq!(v.keys().collect::<Vec<_>>(), ["A", "B", "C"]);
        assert_eq!(v["B"].1.value, Value::Int(3));
        let Value::Seq(s) = &a["s"].1.value else {
            panic!()
        };
        assert_eq!(s.len(), 1);
        assert_eq!(a["k"].1.value, Value::Int(1));
    }
}
