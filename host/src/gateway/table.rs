//! The REST route table: the routes of every owner (the configuration, then each plugin version,
//! also mounted under `/v<major>`), matched with matchit, with conflicts between owners reported;
//! and [`Routes`], which keeps the table in step with the registry and refuses a swapped-in
//! plugin whose routes another one holds.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::http::Method;
use semver::Version;
use serde_json::{Map, Value};

use super::routes::{Route, compile, join_path};
use crate::metrics::{Metrics, RouteMetrics};
use crate::plugins::Plugin;
use crate::registry::{Admission, Registry, Snapshot};

/// Paths the gateway itself serves; plugin routes on them are reported and ignored.
const RESERVED: [&str; 5] = [
    "/health",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/plugins",
];

/// The most path parameters a route may have: matchit 0.8 names them `a` to `z` internally and
/// panics on the 26th, so a route map with more (a plugin's, or the config's) is skipped with a
/// warning instead of taking the host down (found by fuzzing, issue 14 item 9).
const MAX_PARAMS: usize = 25;

/// How many `:param` segments (matchit parameters, catch-alls aside) a path template has.
fn param_count(path: &str) -> usize {
    path.split('/')
        .filter(|seg| {
            seg.strip_prefix(':')
                .is_some_and(|name| !name.is_empty() && !name.starts_with('*'))
        })
        .count()
}

/// koa-router's `:param` segments in matchit's `{param}` syntax.
fn matchit_path(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg.strip_prefix(':') {
            Some(name) if !name.is_empty() => format!("{{{name}}}"),
            _ => seg.replace('{', "{{").replace('}', "}}"),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// One served route with its metrics handles.
pub struct Mounted {
    /// The route.
    pub route: Route,
    /// Requests and latency for it.
    pub metrics: RouteMetrics,
}

/// All routes of a plugin snapshot, by method.
#[derive(Default)]
pub struct RouteTable {
    /// matchit routers by method; values index `entries`.
    by_method: HashMap<Method, matchit::Router<usize>>,
    /// The routes.
    entries: Vec<Mounted>,
}

/// A route that could not be served because another owner took its method and path first.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// Method and path.
    pub route: String,
    /// The owner that keeps it.
    pub kept_by: String,
    /// The owner refused.
    pub refused: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "route {} of {} conflicts with {}, which keeps it",
            self.route, self.refused, self.kept_by
        )
    }
}

/// Route sets of one owner (a plugin version, or the config).
pub struct RouteSource<'a> {
    /// Plugin name or `config`.
    pub owner: &'a str,
    /// The plugin's version (routes are also mounted under `/v<major>`), if a plugin.
    pub version: Option<&'a Version>,
    /// The seneca-web route sets.
    pub sets: &'a [Value],
}

impl RouteTable {
    /// Builds the table; earlier sources keep a method and path when later ones claim it too.
    /// Versions of the same plugin share their plain paths (the router picks the version).
    pub fn build(
        sources: &[RouteSource<'_>],
        metrics: &Metrics,
    ) -> (Self, Vec<Conflict>, Vec<String>) {
        let mut table = Self::default();
        let mut conflicts = Vec::new();
        let mut warnings = Vec::new();
        let mut owners: HashMap<(Method, String), String> = HashMap::new();
        for source in sources {
            for set in source.sets {
                let (routes, mut w) = compile(set, source.owner);
                warnings.append(&mut w);
                for route in routes {
                    if param_count(&route.path) > MAX_PARAMS {
                        warnings.push(format!(
                            "{}: route {} {} has more than {MAX_PARAMS} path parameters and is \
                             skipped",
                            source.owner,
                            route.method,
                            crate::error::clip(&route.path)
                        ));
                        continue;
                    }
                    let mut mounts = vec![route.clone()];
                    if let Some(version) = source.version {
                        let mut versioned = route.clone();
                        versioned.path = join_path(&[&format!("/v{}", version.major), &route.path]);
                        versioned.version = Some(version.major.to_string());
                        mounts.push(versioned);
                    }
                    for mount in mounts {
                        table.insert(mount, &mut owners, &mut conflicts, metrics);
                    }
                }
            }
        }
        (table, conflicts, warnings)
    }

    fn insert(
        &mut self,
        route: Route,
        owners: &mut HashMap<(Method, String), String>,
        conflicts: &mut Vec<Conflict>,
        metrics: &Metrics,
    ) {
        let key = (route.method.clone(), matchit_path(&route.path));
        let describe = format!("{} {}", route.method, route.path);
        if RESERVED.contains(&route.path.as_str()) {
            conflicts.push(Conflict {
                route: describe,
                kept_by: "wasmeca".into(),
                refused: route.owner.clone(),
            });
            return;
        }
        if let Some(owner) = owners.get(&key) {
            if *owner != route.owner {
                conflicts.push(Conflict {
                    route: describe,
                    kept_by: owner.clone(),
                    refused: route.owner.clone(),
                });
            }
            return;
        }
        let index = self.entries.len();
        let router = self.by_method.entry(route.method.clone()).or_default();
        if let Err(e) = router.insert(key.1.clone(), index) {
            // A different template matching the same requests (`/a/:x` against `/a/:y`).
            let kept_by = match &e {
                matchit::InsertError::Conflict { with } => owners
                    .iter()
                    .find(|((m, p), _)| *m == route.method && p == with)
                    .map(|(_, o)| o.clone()),
                _ => None,
            };
            conflicts.push(Conflict {
                route: describe,
                kept_by: kept_by.unwrap_or_else(|| format!("another route ({e})")),
                refused: route.owner.clone(),
            });
            return;
        }
        owners.insert(key, route.owner.clone());
        let metrics = metrics.route(&route.path, route.method.as_str());
        self.entries.push(Mounted { route, metrics });
    }

    /// Every route, for `/plugins` and logs.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.entries.iter().map(|e| &e.route)
    }

    /// The route for a request, with its path parameters; `Err(allowed)` lists the methods
    /// that do serve the path (empty: no route at all).
    pub fn find(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<(&Mounted, Map<String, Value>), Vec<Method>> {
        let lookup = |m: &Method| self.by_method.get(m).and_then(|r| r.at(path).ok());
        let hit = lookup(method).or_else(|| {
            if *method == Method::HEAD {
                lookup(&Method::GET)
            } else {
                None
            }
        });
        if let Some(m) = hit {
            let params = m
                .params
                .iter()
                .map(|(k, v)| {
                    let decoded = percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned();
                    (k.to_owned(), Value::String(decoded))
                })
                .collect();
            return Ok((&self.entries[*m.value], params));
        }
        let mut allowed: Vec<Method> = self
            .by_method
            .iter()
            .filter(|(_, r)| r.at(path).is_ok())
            .map(|(m, _)| m.clone())
            .collect();
        allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Err(allowed)
    }
}

/// A route table and the snapshot it was built from.
struct Built {
    /// The registry snapshot's generation.
    generation: u64,
    /// The table.
    table: Arc<RouteTable>,
    /// The routes left out because another owner holds their method and path.
    conflicts: Arc<[Conflict]>,
}

/// The REST routes of the registry's current plugins and of `[rest] route`, rebuilt whenever the
/// plugin set changes; registered with the registry as an admission check, so a plugin swapped
/// in with routes another one holds is refused and nothing changes.
pub struct Routes {
    /// Where the plugins and their route maps come from.
    registry: Registry,
    /// `[rest] route` sets for patterns served elsewhere; they keep their paths first.
    config: Vec<Value>,
    /// The table for the newest snapshot seen.
    built: ArcSwap<Built>,
}

impl Routes {
    /// The routes of `registry` (now and after every change) and of `config`.
    pub fn new(registry: Registry, config: Vec<Value>) -> Arc<Self> {
        let routes = Arc::new(Self {
            built: ArcSwap::from_pointee(Built {
                generation: u64::MAX,
                table: Arc::default(),
                conflicts: Arc::new([]),
            }),
            registry: registry.clone(),
            config,
        });
        registry.admit_with(routes.clone());
        routes.current();
        routes
    }

    /// The table for the registry's current plugins, rebuilt (and its conflicts and
    /// warnings logged) when the set changed since the last call.
    pub fn current(&self) -> Arc<RouteTable> {
        self.built().table.clone()
    }

    /// The current routes as `/plugins` lists them: method, path, pattern and owner.
    pub fn describe(&self) -> Vec<Value> {
        self.current()
            .routes()
            .map(|r| serde_json::json!({ "method": r.method.as_str(), "path": r.path, "pattern": r.pattern_text, "owner": r.owner }))
            .collect()
    }

    /// The routes of the current plugins left out because another owner holds their method
    /// and path.
    pub fn conflicts(&self) -> Vec<Conflict> {
        self.built().conflicts.to_vec()
    }

    /// The table of the current snapshot, built now if it was not yet.
    fn built(&self) -> Arc<Built> {
        let built = self.built.load_full();
        let snapshot = self.registry.snapshot();
        if built.generation == snapshot.generation() {
            return built;
        }
        let (table, conflicts, warnings) = self.build(&snapshot);
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        for conflict in &conflicts {
            tracing::error!("{conflict}");
        }
        let built = Arc::new(Built {
            generation: snapshot.generation(),
            table: Arc::new(table),
            conflicts: conflicts.into(),
        });
        self.built.store(built.clone());
        built
    }

    /// The table of `snapshot`'s plugins after the configured routes.
    fn build(&self, snapshot: &Snapshot) -> (RouteTable, Vec<Conflict>, Vec<String>) {
        let mut sources = vec![RouteSource {
            owner: "config",
            version: None,
            sets: &self.config,
        }];
        sources.extend(snapshot.plugins().iter().map(|p| RouteSource {
            owner: &p.name,
            version: Some(&p.version),
            sets: &p.routes,
        }));
        RouteTable::build(&sources, self.registry.metrics())
    }
}

impl Admission for Routes {
    fn admit(&self, next: &Snapshot, arriving: &Plugin) -> Result<(), Vec<String>> {
        let (_, conflicts, _) = self.build(next);
        let refused: Vec<String> = conflicts
            .iter()
            .filter(|c| c.refused == arriving.name)
            .map(ToString::to_string)
            .collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(refused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by fuzzing: matchit panics on a route with 26 parameters, so a plugin's route
    /// map could take the host down at load; such a route is skipped with a warning.
    #[test]
    fn a_route_with_too_many_parameters_is_skipped_not_a_panic() {
        let many: String = (0..40).map(|i| format!("/:p{i}")).collect();
        let sets = [json!({"pin": "role:x,cmd:*", "prefix": many, "map": {"a": true, "b": true}})];
        let (table, _, warnings) = RouteTable::build(
            &[RouteSource {
                owner: "x",
                version: None,
                sets: &sets,
            }],
            &Metrics::default(),
        );
        assert_eq!(table.routes().count(), 0);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("more than 25 path parameters")),
            "{warnings:?}"
        );
        let ok: String = (0..25).map(|i| format!("/:p{i}")).collect();
        let sets = [json!({"pin": "role:x,cmd:*", "prefix": ok, "map": {"a": true}})];
        let (table, _, _) = RouteTable::build(
            &[RouteSource {
                owner: "x",
                version: None,
                sets: &sets,
            }],
            &Metrics::default(),
        );
        assert_eq!(table.routes().count(), 1);
    }

    #[test]
    fn table_finds_routes_params_and_allowed_methods() {
        let sets = [
            json!({"prefix": "/user", "pin": "module:user,if:*", "map": {
            "list": {"GET": true, "name": ""}, "load": {"GET": true, "name": "", "suffix": "/:id"},
            "edit": {"PUT": true, "name": "", "suffix": "/:id"}}}),
        ];
        let v = Version::new(1, 2, 0);
        let (table, conflicts, _) = RouteTable::build(
            &[RouteSource {
                owner: "user",
                version: Some(&v),
                sets: &sets,
            }],
            &Metrics::default(),
        );
        assert!(conflicts.is_empty());
        let (entry, params) = table.find(&Method::GET, "/user/7").map_err(|_| ()).unwrap();
        assert_eq!(entry.route.pattern_text, "module:user,if:load");
        assert_eq!(params, json!({"id": "7"}).as_object().unwrap().clone());
        assert!(table.find(&Method::HEAD, "/user").is_ok());
        let Err(allowed) = table.find(&Method::DELETE, "/user/7").map(|_| ()) else {
            panic!("DELETE is not routed")
        };
        assert_eq!(allowed, [Method::GET, Method::PUT]);
        assert_eq!(
            table.find(&Method::GET, "/nothing").map(|_| ()),
            Err(vec![])
        );
        let (versioned, _) = table
            .find(&Method::GET, "/v1/user/7")
            .map_err(|_| ())
            .unwrap();
        assert_eq!(versioned.route.version.as_deref(), Some("1"));
    }

    #[test]
    fn conflicts_name_both_owners_and_the_first_keeps_the_route() {
        let a = [json!({"pin": "a:*", "map": {"x": true}})];
        let b = [
            json!({"pin": "b:*", "map": {"x": true, "health": {"alias": "/health", "GET": true}}}),
        ];
        let (table, conflicts, _) = RouteTable::build(
            &[
                RouteSource {
                    owner: "first",
                    version: None,
                    sets: &a,
                },
                RouteSource {
                    owner: "second",
                    version: None,
                    sets: &b,
                },
            ],
            &Metrics::default(),
        );
        let mut described: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
        described.sort();
        assert_eq!(
            described,
            [
                "route GET /health of second conflicts with wasmeca, which keeps it",
                "route GET /x of second conflicts with first, which keeps it"
            ]
        );
        let (entry, _) = table.find(&Method::GET, "/x").map_err(|_| ()).unwrap();
        assert_eq!(entry.route.owner, "first");
        // Two versions of one plugin share the plain path without a conflict.
        let v1 = Version::new(1, 0, 0);
        let v2 = Version::new(2, 0, 0);
        let (_, conflicts, _) = RouteTable::build(
            &[
                RouteSource {
                    owner: "s",
                    version: Some(&v1),
                    sets: &a,
                },
                RouteSource {
                    owner: "s",
                    version: Some(&v2),
                    sets: &a,
                },
            ],
            &Metrics::default(),
        );
        assert!(conflicts.is_empty(), "{conflicts:?}");
    }

    fn plugin(name: &str, routes: Value, file: &str) -> Arc<Plugin> {
        let native = Plugin::native(name, Version::new(1, 0, 0), Vec::new());
        Arc::new(Plugin {
            routes: vec![routes],
            file: Some(file.into()),
            ..native
        })
    }

    #[test]
    fn routes_follow_the_registry_and_refuse_a_plugin_whose_routes_are_taken() {
        let runtime = crate::runtime::Runtime::new(None, 1 << 20).expect("an engine");
        let registry = Registry::new(
            runtime,
            Vec::new(),
            Arc::new(Metrics::default()),
            crate::registry::LoadLimits::default(),
        );
        let config = vec![json!({"pin": "role:cfg,cmd:*", "map": {"cfg": true}})];
        let routes = Routes::new(registry.clone(), config);
        let path = |p: &str| std::path::PathBuf::from(p);
        registry
            .swap_file(
                &path("/p/a.wasm"),
                Some(plugin(
                    "a",
                    json!({"pin": "a:*", "map": {"x": true}}),
                    "/p/a.wasm",
                )),
            )
            .expect("a is admitted");
        assert!(
            routes.current().find(&Method::GET, "/x").is_ok(),
            "the table follows"
        );
        assert!(routes.current().find(&Method::GET, "/cfg").is_ok());
        let refused = registry
            .swap_file(
                &path("/p/b.wasm"),
                Some(plugin(
                    "b",
                    json!({"pin": "b:*", "map": {"x": true}}),
                    "/p/b.wasm",
                )),
            )
            .unwrap_err();
        assert_eq!(
            refused.reasons,
            [
                "route GET /x of b conflicts with a, which keeps it",
                "route GET /v1/x of b conflicts with a, which keeps it"
            ]
        );
        assert_eq!(registry.snapshot().plugins().len(), 1, "nothing changed");
        let table = routes.current();
        let (entry, _) = table
            .find(&Method::GET, "/x")
            .map_err(|_| ())
            .expect("a keeps /x");
        assert_eq!(entry.route.owner, "a");
        // Installed plugins are not refused: their conflicts are reported.
        registry.install(plugin(
            "c",
            json!({"pin": "c:*", "map": {"x": true}}),
            "/p/c.wasm",
        ));
        assert_eq!(routes.conflicts().len(), 2);
    }
}
