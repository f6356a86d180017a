//! seneca-web route maps (SENECA.md §5), pure: the grammar (`prefix`, `postfix`, `pin`, `map`,
//! `name`, `suffix`, `alias`, `redirect`, `autoreply`) compiled into routes, with paths joined
//! as Node joins them.

use axum::http::Method;
use serde_json::{Map, Value};

use crate::pattern;

/// The verbs seneca-web knows.
const VERBS: [&str; 7] = ["GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH"];

/// One REST route: a method and path that act a pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// The HTTP method, upper case.
    pub method: Method,
    /// The path template in seneca-web (koa-router) syntax: `/user/:id`.
    pub path: String,
    /// The pattern the route acts (the pin with its first `:*` replaced by the map key).
    pub pattern: Map<String, Value>,
    /// The pattern as text, for logs and metrics.
    pub pattern_text: String,
    /// Where to send the client after the act succeeds (302), if anywhere.
    pub redirect: Option<String>,
    /// False when the route answers 200 with no body whatever the act returns.
    pub autoreply: bool,
    /// Who declared it: the plugin's name, or `config`.
    pub owner: String,
    /// `$version` pin the route adds (for the `/v<major>` mounts).
    pub version: Option<String>,
}

/// Compiles one seneca-web route set (`{prefix, postfix, pin, map}`) to routes. Problems that
/// seneca-web silently skips (no pin, an empty key, a map entry with no verbs) are returned as
/// warnings instead.
pub fn compile(set: &Value, owner: &str) -> (Vec<Route>, Vec<String>) {
    let mut routes = Vec::new();
    let mut warnings = Vec::new();
    let Some(set) = set.as_object() else {
        warnings.push(format!("{owner}: a route set must be an object, not {set}"));
        return (routes, warnings);
    };
    let Some(pin) = set.get("pin").and_then(Value::as_str) else {
        warnings.push(format!("{owner}: route set without a string `pin` skipped"));
        return (routes, warnings);
    };
    let text = |key: &str| set.get(key).and_then(Value::as_str).unwrap_or("");
    let (prefix, postfix) = (text("prefix"), text("postfix"));
    let Some(map) = set.get("map").and_then(Value::as_object) else {
        warnings.push(format!("{owner}: route set `{pin}` has no `map` object"));
        return (routes, warnings);
    };
    for (key, spec) in map {
        if key.is_empty() {
            warnings.push(format!(
                "{owner}: route set `{pin}`: an empty map key is skipped"
            ));
            continue;
        }
        let pattern_text = pin.replacen(":*", &format!(":{key}"), 1);
        let pattern = match pattern::parse_jsonic(&pattern_text) {
            Ok(p) => p,
            Err(e) => {
                warnings.push(format!("{owner}: route `{key}`: pattern {e}"));
                continue;
            }
        };
        let (methods, name, suffix, alias, redirect, autoreply) = match spec {
            Value::Object(o) => {
                let methods: Vec<Method> = o
                    .keys()
                    .filter_map(|k| VERBS.iter().find(|v| v.eq_ignore_ascii_case(k)))
                    .filter_map(|v| Method::from_bytes(v.as_bytes()).ok())
                    .collect();
                let get = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_owned);
                let autoreply = o.get("autoreply") != Some(&Value::Bool(false));
                (
                    methods,
                    get("name"),
                    get("suffix"),
                    get("alias"),
                    get("redirect"),
                    autoreply,
                )
            }
            // Any non-object, `false` included, is a GET route (as seneca-web does it).
            _ => (vec![Method::GET], None, None, None, None, true),
        };
        if methods.is_empty() {
            warnings.push(format!(
                "{owner}: route `{key}` of `{pin}` names no HTTP verb, so it is never served"
            ));
            continue;
        }
        let path = match alias {
            Some(alias) => join_path(&[&alias]),
            None => {
                let name = name.as_deref().unwrap_or(key);
                join_path(&[prefix, name, postfix, suffix.as_deref().unwrap_or("")])
            }
        };
        for method in methods {
            routes.push(Route {
                method,
                path: path.clone(),
                pattern: pattern.clone(),
                pattern_text: pattern_text.clone(),
                redirect: redirect.clone(),
                autoreply,
                owner: owner.to_owned(),
                version: None,
            });
        }
    }
    (routes, warnings)
}

/// Node's `path.join('/', ...)`: segments joined with `/`, `//` collapsed, `.` and `..`
/// resolved, a trailing slash kept when the last non-empty part had one.
pub fn join_path(parts: &[&str]) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for part in parts {
        for segment in part.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
    }
    let trailing = parts
        .iter()
        .rev()
        .find(|p| !p.is_empty())
        .is_some_and(|p| p.ends_with('/'));
    let mut path = format!("/{}", segments.join("/"));
    if trailing && path.len() > 1 {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn routes(set: Value) -> Vec<(String, String, String)> {
        let (routes, warnings) = compile(&set, "p");
        assert!(warnings.is_empty(), "{warnings:?}");
        routes
            .into_iter()
            .map(|r| (r.method.to_string(), r.path, r.pattern_text))
            .collect()
    }

    fn triple(m: &str, p: &str, pat: &str) -> (String, String, String) {
        (m.into(), p.into(), pat.into())
    }

    #[test]
    fn paths_are_joined_like_node() {
        assert_eq!(
            join_path(&["/api/user", "list", "/v1", ""]),
            "/api/user/list/v1"
        );
        assert_eq!(
            join_path(&["/api/user", "", "/v1", "/:id"]),
            "/api/user/v1/:id"
        );
        assert_eq!(join_path(&["//a//", "./b", "../c"]), "/a/c");
        assert_eq!(join_path(&["", ""]), "/");
        assert_eq!(join_path(&["/api/", "list/"]), "/api/list/");
    }

    #[test]
    fn seneca_web_grammar() {
        let set = json!({
            "prefix": "/api/user", "postfix": "/v1", "pin": "module:user,if:*",
            "map": {
                "list": true,
                "load": {"GET": true, "name": "", "suffix": "/:id"},
                "edit": {"put": true, "PATCH": false, "name": "", "suffix": "/:id"},
                "off": false,
                "home": {"alias": "/x/../home", "GET": true},
                "none": {"name": "nothing"}
            }
        });
        let (compiled, warnings) = compile(&set, "user");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("route `none`"));
        let mut got: Vec<_> = compiled
            .iter()
            .map(|r| (r.method.to_string(), r.path.clone(), r.pattern_text.clone()))
            .collect();
        got.sort();
        let mut want = vec![
            triple("GET", "/api/user/list/v1", "module:user,if:list"),
            triple("GET", "/api/user/v1/:id", "module:user,if:load"),
            triple("PUT", "/api/user/v1/:id", "module:user,if:edit"),
            triple("PATCH", "/api/user/v1/:id", "module:user,if:edit"),
            triple("GET", "/api/user/off/v1", "module:user,if:off"),
            triple("GET", "/home", "module:user,if:home"),
        ];
        want.sort();
        assert_eq!(got, want);
        let list = compiled
            .iter()
            .find(|r| r.pattern_text.ends_with("list"))
            .unwrap();
        assert_eq!(
            list.pattern,
            json!({"module": "user", "if": "list"})
                .as_object()
                .unwrap()
                .clone()
        );
    }

    #[test]
    fn only_the_first_star_takes_the_key_and_pins_without_star_share_one_pattern() {
        assert_eq!(
            routes(json!({"pin": "a:*,b:*", "map": {"k": true}})),
            [triple("GET", "/k", "a:k,b:*")]
        );
        assert_eq!(
            routes(json!({"pin": "role:x", "map": {"one": true, "two": true}})),
            [
                triple("GET", "/one", "role:x"),
                triple("GET", "/two", "role:x")
            ]
        );
    }

    #[test]
    fn redirect_and_autoreply() {
        let (r, _) = compile(
            &json!({"pin": "a:*", "map": {"go": {"POST": true, "redirect": "/done", "autoreply": false}}}),
            "p",
        );
        assert_eq!(
            (r[0].redirect.as_deref(), r[0].autoreply),
            (Some("/done"), false)
        );
    }

    #[test]
    fn sets_without_pin_or_with_empty_keys_are_reported() {
        let (r, w) = compile(&json!({"map": {"a": true}}), "p");
        assert!(r.is_empty() && w[0].contains("without a string `pin`"));
        let (r, w) = compile(&json!({"pin": "a:*", "map": {"": true}}), "p");
        assert!(r.is_empty() && w[0].contains("empty map key"));
    }
}
