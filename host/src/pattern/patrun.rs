//! The patrun 7 trie: data stored under patterns, and the greedy, alphabetical-key precedence
//! walk that finds the data for a message (SENECA.md §1). Pure, no I/O.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value};

use super::{Glob, Pattern, match_string};

/// Index of a node in the trie arena.
type NodeId = usize;

/// A trie node: tests one key, with exact children by value, glob children in insertion order,
/// a "skip" child for patterns without this key, and optional data.
#[derive(Debug, Clone)]
struct Node<D> {
    /// The key tested here; `None` for a leaf that has not been extended yet.
    key: Option<String>,
    /// Children by exact value.
    exact: HashMap<String, NodeId>,
    /// Children by glob, tried in insertion order after an exact miss.
    globs: Vec<(Glob, NodeId)>,
    /// Patterns that do not have `key`.
    skip: Option<NodeId>,
    /// The data of the pattern that ends here.
    data: Option<D>,
}

impl<D> Default for Node<D> {
    fn default() -> Self {
        Self {
            key: None,
            exact: HashMap::new(),
            globs: Vec::new(),
            skip: None,
            data: None,
        }
    }
}

/// How a message looks up a key: a JSON object, or a pattern used as a message.
pub trait Lookup {
    /// The value under `key` as a JSON value, when the message has it.
    fn value(&self, key: &str) -> Option<Cow<'_, Value>>;
    /// How many keys the message has (for exact finds).
    fn len(&self) -> usize;
    /// True if the message has no keys.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Lookup for Map<String, Value> {
    fn value(&self, key: &str) -> Option<Cow<'_, Value>> {
        self.get(key).map(Cow::Borrowed)
    }
    fn len(&self) -> usize {
        Map::len(self)
    }
}

impl Lookup for Pattern {
    fn value(&self, key: &str) -> Option<Cow<'_, Value>> {
        self.get(key)
            .map(|v| Cow::Owned(Value::String(v.to_owned())))
    }
    fn len(&self) -> usize {
        self.pairs.len()
    }
}

/// What [`Patrun::find_match`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'a, D> {
    /// Data under a pattern with at least one key.
    Pattern(&'a D),
    /// Only the catch-all `{}` answers.
    CatchAll(&'a D),
}

impl<'a, D> Found<'a, D> {
    /// The data, whichever it is.
    pub fn data(self) -> &'a D {
        match self {
            Self::Pattern(d) | Self::CatchAll(d) => d,
        }
    }
}

/// patrun 7 with globs on: stores data under patterns and finds the data for a message by the
/// greedy, alphabetical-key walk of SENECA.md §1.
#[derive(Debug, Clone)]
pub struct Patrun<D> {
    /// Node arena; index 0 is the root.
    nodes: Vec<Node<D>>,
}

impl<D> Default for Patrun<D> {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }
}

impl<D> Patrun<D> {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, node: Node<D>) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The child for `value` at node `at` (which tests the key), created if missing.
    fn child(&mut self, at: NodeId, value: &str) -> NodeId {
        if Glob::is_glob(value) {
            if let Some((_, id)) = self.nodes[at].globs.iter().find(|(g, _)| g.source == value) {
                return *id;
            }
            let id = self.push(Node::default());
            self.nodes[at].globs.push((Glob::new(value), id));
            id
        } else {
            if let Some(id) = self.nodes[at].exact.get(value) {
                return *id;
            }
            let id = self.push(Node::default());
            self.nodes[at].exact.insert(value.to_owned(), id);
            id
        }
    }

    /// The data slot of `pattern`, creating its path (patrun's `add` without the assignment).
    pub fn slot(&mut self, pattern: &Pattern) -> &mut Option<D> {
        let mut at = 0;
        let mut pairs = pattern.pairs.iter().peekable();
        while let Some((key, value)) = pairs.peek() {
            let node_key = self.nodes[at].key.clone();
            match node_key {
                Some(k) if k == *key => {
                    at = self.child(at, value);
                    pairs.next();
                }
                None => {
                    self.nodes[at].key = Some(key.clone());
                    at = self.child(at, value);
                    pairs.next();
                }
                Some(k) if key.as_str() < k.as_str() => {
                    // Insert this key before the node's: the node's tests move to a skip child.
                    let node = &mut self.nodes[at];
                    let moved = Node {
                        key: node.key.take(),
                        exact: std::mem::take(&mut node.exact),
                        globs: std::mem::take(&mut node.globs),
                        skip: node.skip.take(),
                        data: None,
                    };
                    let moved = self.push(moved);
                    self.nodes[at].skip = Some(moved);
                    self.nodes[at].key = Some(key.clone());
                    at = self.child(at, value);
                    pairs.next();
                }
                Some(_) => {
                    at = match self.nodes[at].skip {
                        Some(s) => s,
                        None => {
                            let s = self.push(Node::default());
                            self.nodes[at].skip = Some(s);
                            s
                        }
                    };
                }
            }
        }
        &mut self.nodes[at].data
    }

    /// Stores `data` under `pattern`; returns the data it replaced (the same pattern added again).
    pub fn add(&mut self, pattern: &Pattern, data: D) -> Option<D> {
        self.slot(pattern).replace(data)
    }

    /// Finds the data for a message (patrun's non-exact `find`, used for dispatch). Data under
    /// the empty pattern `{}` is the catch-all: it answers when nothing else does. As in patrun
    /// 7 (and Seneca 3.38, checked), its presence also means the walk never backtracks, since
    /// it counts as already found: with `{}`, `a:1,b:2,c:3` and `a:1,d:4`, the message
    /// `{a:1,b:2,d:4}` finds `{}`, not `a:1,d:4`.
    pub fn find<M: Lookup + ?Sized>(&self, msg: &M) -> Option<&D> {
        self.walk(msg, false)
    }

    /// The data under the empty pattern `{}` (Seneca's catch-all), if any.
    pub fn catch_all(&self) -> Option<&D> {
        self.nodes[0].data.as_ref()
    }

    /// Like [`find`](Self::find), but says whether the answer is the catch-all: a caller that
    /// has other places to look (peers, remote clients) tries them before settling for `{}`.
    pub fn find_match<M: Lookup + ?Sized>(&self, msg: &M) -> Option<Found<'_, D>> {
        let data = self.walk(msg, false)?;
        Some(match self.catch_all() {
            Some(root) if std::ptr::eq(root, data) => Found::CatchAll(data),
            _ => Found::Pattern(data),
        })
    }

    fn walk<M: Lookup + ?Sized>(&self, msg: &M, exact: bool) -> Option<&D> {
        let root = &self.nodes[0];
        let mut data: Option<&D> = root.data.as_ref();
        let mut at = Some(0);
        let mut stars: Vec<NodeId> = Vec::new();
        let mut found_keys = 0usize;
        while let Some(id) = at {
            let node = &self.nodes[id];
            at = match &node.key {
                Some(key) => {
                    let value = msg.value(key);
                    let value = value.as_deref();
                    let text = match_string(value);
                    let next = node.exact.get(text.as_ref()).copied().or_else(|| {
                        node.globs
                            .iter()
                            .find(|(g, _)| g.matches_value(value))
                            .map(|(_, id)| *id)
                    });
                    match next {
                        Some(next) => {
                            found_keys += 1;
                            if let Some(s) = node.skip {
                                stars.push(s);
                            }
                            match &self.nodes[next].data {
                                Some(d) => data = Some(d),
                                None if exact => data = None,
                                None => {}
                            }
                            Some(next)
                        }
                        None => node.skip,
                    }
                }
                None => None,
            };
            if at.is_none() && data.is_none() {
                at = stars.pop();
            }
        }
        if exact {
            return if found_keys == msg.len() { data } else { None };
        }
        data.or(root.data.as_ref())
    }

    /// Every stored pattern with its data, in trie order (globs included).
    pub fn list(&self) -> Vec<(Pattern, &D)> {
        let mut out = Vec::new();
        self.collect(0, &mut Vec::new(), &mut out, false);
        out
    }

    /// Every stored pattern with its data, in the order the walk of [`find`](Self::find)
    /// prefers them (SENECA.md §1): keys alphabetically; per key an exact value, then its globs
    /// in insertion order, then the patterns without that key; a pattern after the narrower
    /// ones that extend it; the catch-all `{}` last.
    pub fn precedence(&self) -> Vec<(Pattern, &D)> {
        let mut out = Vec::new();
        self.collect(0, &mut Vec::new(), &mut out, true);
        out
    }

    /// Walks the trie from `at`; a node's own data comes before its children (trie order) or,
    /// with `data_last`, after its children and its skip branch (precedence order).
    fn collect<'s>(
        &'s self,
        at: NodeId,
        path: &mut Vec<(String, String)>,
        out: &mut Vec<(Pattern, &'s D)>,
        data_last: bool,
    ) {
        let node = &self.nodes[at];
        let own = |out: &mut Vec<(Pattern, &'s D)>, path: &[(String, String)]| {
            if let Some(d) = &node.data {
                let mut pairs = path.to_vec();
                pairs.sort();
                out.push((Pattern { pairs }, d));
            }
        };
        if !data_last {
            own(out, path);
        }
        if let Some(key) = &node.key {
            let mut exact: Vec<_> = node.exact.iter().collect();
            exact.sort();
            let children = exact.into_iter().map(|(v, id)| (v.as_str(), *id));
            let globs = node.globs.iter().map(|(g, id)| (g.source.as_str(), *id));
            for (value, id) in children.chain(globs) {
                path.push((key.clone(), value.to_owned()));
                self.collect(id, path, out, data_last);
                path.pop();
            }
        }
        if let Some(s) = node.skip {
            self.collect(s, path, out, data_last);
        }
        if data_last {
            own(out, path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn msg(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn router(entries: &[(&str, &'static str)]) -> Patrun<&'static str> {
        let mut r = Patrun::new();
        for (p, d) in entries {
            r.add(&pat(p), *d);
        }
        r
    }

    fn find(r: &Patrun<&'static str>, m: Value) -> Option<&'static str> {
        r.find(&msg(m)).copied()
    }

    // Every row of SENECA.md §1's worked examples.

    #[test]
    fn row_exact_beats_shorter() {
        let r = router(&[("a:1", "A"), ("a:1,b:1", "AB"), ("a:1,b:2", "AB2")]);
        assert_eq!(find(&r, json!({"a":1,"b":1})), Some("AB"));
    }

    #[test]
    fn row_partial_falls_back_to_wider() {
        let r = router(&[("a:1", "A"), ("a:1,b:1", "AB"), ("a:1,b:2", "AB2")]);
        assert_eq!(find(&r, json!({"a":1,"b":3})), Some("A"));
        assert_eq!(find(&r, json!({"a":1,"z":9})), Some("A"));
        assert_eq!(find(&r, json!({"a":"1"})), Some("A"));
    }

    #[test]
    fn row_no_match() {
        let r = router(&[("a:1", "A"), ("a:1,b:1", "AB"), ("a:1,b:2", "AB2")]);
        assert_eq!(find(&r, json!({"b":1})), None);
    }

    #[test]
    fn row_alphabetical_keys_decide() {
        let r = router(&[("a:0", "A"), ("b:1", "B"), ("c:2", "C"), ("a:0,b:1", "AB")]);
        assert_eq!(find(&r, json!({"a":0,"c":2})), Some("A"));
        assert_eq!(find(&r, json!({"a":1,"b":1})), Some("B"));
    }

    #[test]
    fn row_one_key_beats_two() {
        let r = router(&[("a:1", "A"), ("b:2,c:3", "BC")]);
        assert_eq!(find(&r, json!({"a":1,"b":2,"c":3})), Some("A"));
    }

    #[test]
    fn row_skip_then_match() {
        let r = router(&[("b:1", "B"), ("a:1,c:1", "AC")]);
        assert_eq!(find(&r, json!({"a":1,"b":1,"c":1})), Some("AC"));
    }

    #[test]
    fn row_no_backtrack_once_found() {
        let r = router(&[("a:1", "A"), ("a:1,b:2,c:3", "ABC"), ("a:1,d:4", "AD")]);
        assert_eq!(find(&r, json!({"a":1,"b":2,"d":4})), Some("A"));
    }

    #[test]
    fn row_backtrack_when_nothing_found() {
        let r = router(&[("a:1,b:2,c:3", "ABC"), ("a:1,d:4", "AD")]);
        assert_eq!(find(&r, json!({"a":1,"b":2,"d":4})), Some("AD"));
    }

    #[test]
    fn row_globs_exact_first_then_insertion_order() {
        let r = router(&[("a:'*'", "S"), ("a:x", "X"), ("a:'x*'", "XS")]);
        assert_eq!(find(&r, json!({"a":"x"})), Some("X"));
        assert_eq!(find(&r, json!({"a":"xa"})), Some("S"));
        assert_eq!(find(&r, json!({"a":1})), Some("S"));
    }

    #[test]
    fn row_star_requires_the_key() {
        let r = router(&[("a:'*'", "S")]);
        assert_eq!(find(&r, json!({})), None);
        assert_eq!(find(&r, json!({"b":1})), None);
    }

    #[test]
    fn row_null_key_dropped() {
        let mut r = Patrun::new();
        r.add(
            &Pattern::from_object(&msg(json!({"c":null,"d":1}))).unwrap(),
            "CD",
        );
        assert_eq!(find(&r, json!({"d":1})), Some("CD"));
    }

    #[test]
    fn row_root_catch_all() {
        let r = router(&[("", "ROOT"), ("a:1", "A")]);
        assert_eq!(find(&r, json!({"a":2})), Some("ROOT"));
        assert_eq!(find(&r, json!({"a":1})), Some("A"));
    }

    #[test]
    fn local_exact_beats_client_glob() {
        let r = router(&[
            ("role:math,cmd:*", "CLIENT"),
            ("role:math,cmd:sum", "LOCAL"),
        ]);
        assert_eq!(find(&r, json!({"role":"math","cmd":"sum"})), Some("LOCAL"));
        assert_eq!(find(&r, json!({"role":"math","cmd":"mul"})), Some("CLIENT"));
    }

    #[test]
    fn meta_keys_never_match() {
        let r = router(&[("cmd:x", "X")]);
        assert_eq!(
            find(&r, json!({"cmd":"x","timeout$":5,"$version":"1"})),
            Some("X")
        );
    }

    #[test]
    fn same_pattern_replaces() {
        let mut r = router(&[("a:1,b:2", "first")]);
        assert_eq!(r.add(&pat("b:2 a:1"), "second"), Some("first"));
        assert_eq!(find(&r, json!({"a":1,"b":2})), Some("second"));
    }

    #[test]
    fn list_includes_globs() {
        let r = router(&[("b:1", "B"), ("a:1,c:*", "AC"), ("", "ROOT")]);
        let listed: Vec<String> = r
            .list()
            .into_iter()
            .map(|(p, d)| format!("{p}={d}"))
            .collect();
        assert_eq!(listed, ["=ROOT", "a:1,c:*=AC", "b:1=B"]);
    }

    #[test]
    fn precedence_lists_the_narrow_before_the_wide_and_the_catch_all_last() {
        let r = router(&[
            ("", "ROOT"),
            ("b:2", "B"),
            ("a:'*'", "AS"),
            ("a:1", "A"),
            ("a:1,c:1", "AC"),
            ("a:1,b:1", "AB"),
            ("a:'x*'", "AX"),
        ]);
        let ordered: Vec<String> = r
            .precedence()
            .into_iter()
            .map(|(p, d)| format!("{p}={d}"))
            .collect();
        assert_eq!(
            ordered,
            [
                "a:1,b:1=AB",
                "a:1,c:1=AC",
                "a:1=A",
                "a:*=AS",
                "a:x*=AX",
                "b:2=B",
                "=ROOT"
            ]
        );
        // The walk agrees: each message finds the first listed pattern it fits.
        assert_eq!(find(&r, json!({"a":1,"b":1,"c":1})), Some("AB"));
        assert_eq!(find(&r, json!({"a":1,"c":1,"b":2})), Some("AC"));
        assert_eq!(find(&r, json!({"a":"xy","b":2})), Some("AS"));
        assert_eq!(find(&r, json!({"b":2})), Some("B"));
        assert_eq!(r.list().len(), 7, "the same patterns as the trie order");
    }

    #[test]
    fn pattern_as_message_finds_itself_or_wider() {
        let r = router(&[("role:user", "U"), ("role:user,cmd:*", "UC")]);
        assert_eq!(r.find(&pat("role:user,cmd:*")).copied(), Some("UC"));
        assert_eq!(r.find(&pat("role:user,cmd:x,z:1")).copied(), Some("UC"));
        assert_eq!(r.find(&pat("role:user,z:1")).copied(), Some("U"));
    }

    /// Issue 14 item 8: the catch-all `{}` answers only what nothing else does, and a caller
    /// can tell it apart; with it, the walk does not backtrack (patrun 7.3 and Seneca 3.38
    /// both answer ROOT for `{a:1,b:2,d:4}` here; checked against them).
    #[test]
    fn catch_all_is_the_last_resort_and_says_so() {
        let r = router(&[("a:1,b:2,c:3", "ABC"), ("a:1,d:4", "AD"), ("x:1", "X")]);
        assert_eq!(r.catch_all(), None);
        assert_eq!(find(&r, json!({"zz":1})), None);
        let mut r = r;
        r.add(&pat("{}"), "ROOT");
        assert_eq!(r.catch_all(), Some(&"ROOT"));
        assert_eq!(find(&r, json!({"zz":1})), Some("ROOT"));
        assert_eq!(find(&r, json!({})), Some("ROOT"));
        assert_eq!(find(&r, json!({"a":1,"d":4})), Some("AD"));
        assert_eq!(find(&r, json!({"x":1,"y":2})), Some("X"));
        assert_eq!(find(&r, json!({"a":1,"b":2,"d":4})), Some("ROOT"));
        let found = |m: Value| r.find_match(&msg(m));
        assert_eq!(found(json!({"zz":1})), Some(Found::CatchAll(&"ROOT")));
        assert_eq!(found(json!({"x":1})), Some(Found::Pattern(&"X")));
        assert_eq!(found(json!({"x":1})).map(Found::data), Some(&"X"));
        // Added first or last, `{}` is the same catch-all.
        let first = router(&[("", "ROOT"), ("a:1", "A")]);
        assert_eq!(
            first.find_match(&msg(json!({"a":1}))),
            Some(Found::Pattern(&"A"))
        );
        assert_eq!(
            first.find_match(&msg(json!({"a":2}))),
            Some(Found::CatchAll(&"ROOT"))
        );
    }
}
