//! The configuration's unit tests: every section read, defaults, resolution against the file's
//! folder, and the errors that name the file, line and key.

use super::*;

#[test]
fn defaults() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.limits.timeout_ms, 22_222);
    assert_eq!(c.limits.memory_bytes(), 64 << 20);
    assert_eq!(c.limits.instance().replace_after_growth, 16 << 20);
    assert!(c.plugin.is_empty());
}

#[test]
fn full_file() {
    let c = Config::from_toml(
        r#"
        cache_dir = "/tmp/x"
        [build]
        command = "make"
        [limits]
        timeout_ms = 500
        memory_mib = 8
        replace_after_growth_mib = 0
        [[plugin]]
        path = "plugins"
        [[plugin]]
        path = "user.wasm"
        instances = 4
        replace_after_growth_mib = 2
        options = { seed = [1, 2], name = "x" }
        "#,
    )
    .unwrap();
    assert_eq!(c.limits.timeout(), Duration::from_millis(500));
    assert_eq!(c.limits.max_depth, 32);
    let instance = c.limits.instance();
    assert_eq!(
        (instance.memory, instance.replace_after_growth),
        (8 << 20, 0)
    );
    assert_eq!(c.plugin[1].instances, Some(4));
    let user = c.plugin[1].source("user.wasm".into());
    assert_eq!(
        (
            user.replace_after_growth,
            c.plugin[0].source("a".into()).replace_after_growth
        ),
        (Some(2 << 20), None)
    );
    assert_eq!(
        c.plugin[1].options.as_ref().unwrap()["seed"],
        serde_json::json!([1, 2])
    );
    assert_eq!(c.build.unwrap().command, "make");
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let e = Config::from_toml("[limits]\ntimeout_ms = 5\ntimeuot = 3\n").unwrap_err();
    assert!(e.contains("unknown field `timeuot`"), "{e}");
    assert!(e.contains("line 3"), "{e}");
    let e = Config::from_toml("plugins = []").unwrap_err();
    assert!(e.contains("unknown field `plugins`"), "{e}");
    let e = Config::from_toml("[[plugin]]\npath = 3\n").unwrap_err();
    assert!(e.contains("line 2"), "{e}");
}

#[test]
fn bad_client_pins_are_refused() {
    let mut c = Config::from_toml("[[client]]\ntype = \"http\"\npin = \"a:1,,b\"").unwrap();
    c.origin = Some("wasmeca.toml".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("client 0") && e.contains("column 5"), "{e}");
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let c = Config {
        base: "/etc/app".into(),
        ..Config::default()
    };
    assert_eq!(
        c.resolve(Path::new("p/x.wasm")),
        Path::new("/etc/app/p/x.wasm")
    );
    assert_eq!(c.resolve(Path::new("/abs.wasm")), Path::new("/abs.wasm"));
}

#[test]
fn deeply_nested_options_are_refused_not_a_crash() {
    // toml stops at its own recursion limit, well under 3,000 levels.
    let deep = format!(
        "[[plugin]]\npath = 'x'\noptions = {{ a = {}1{} }}\n",
        "[".repeat(3000),
        "]".repeat(3000)
    );
    let e = Config::from_toml(&deep).unwrap_err();
    assert!(e.contains("line 3"), "{e}");
    let tables = format!("{}1{}", "{ a = ".repeat(3000), " }".repeat(3000));
    assert!(Config::from_toml(&format!("[rest]\nroute = [{tables}]")).is_err());
}

#[test]
fn zero_instances_is_refused() {
    let mut c = Config::from_toml("[[plugin]]\npath = 'x'\ninstances = 0\n").unwrap();
    c.origin = Some("wasmeca.toml".into());
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("instances must be at least 1"), "{e}");
}

#[test]
fn missing_plugin_path() {
    let c = Config::from_paths(&["/nonexistent/zzz.wasm".into()]);
    let e = c.plugin_sources().unwrap_err().to_string();
    assert_eq!(e, "plugin path /nonexistent/zzz.wasm does not exist");
}

#[test]
fn amqp_listen_and_client() {
    let c = Config::from_toml(
        r#"
        [[listen]]
        type = "amqp"
        pins = ["cmd:salute", "role:user,cmd:*"]
        prefetch = 8
        [[client]]
        type = "amqp"
        pin = "role:math,cmd:*"
        exchange = "test.topic"
        "#,
    )
    .unwrap();
    let Listen::Amqp(listen) = &c.listeners()[0] else {
        panic!("amqp listener")
    };
    assert_eq!(
        (
            listen.exchange.as_str(),
            listen.queue_prefix.as_str(),
            listen.prefetch
        ),
        ("seneca.topic", "seneca.add", 8)
    );
    assert_eq!(listen.dead_letter_queue, "seneca.dlq");
    let Client::Amqp(client) = &c.client[0] else {
        panic!("amqp client")
    };
    assert_eq!(
        (client.exchange.as_str(), client.queue_prefix.as_str()),
        ("test.topic", "seneca.act")
    );
    assert_eq!(c.client[0].pins(), ["role:math,cmd:*"]);
    let given = Urls::parse("amqp://x");
    assert_eq!(amqp_urls(Some(&given)), given);
}

#[test]
fn broker_lists_and_queue_types() {
    let c = Config::from_toml(
        r#"
        [amqp]
        url = ["amqp://a:5672", "amqp://b:5672,amqp://c:5672"]
        queue_type = "quorum"
        [events]
        url = "amqp://e1, amqp://e2"
        [[listen]]
        type = "amqp"
        [[listen]]
        type = "amqp"
        url = "amqp://own"
        queue_type = "classic"
        [[client]]
        type = "amqp"
        pin = "x:1"
        "#,
    )
    .unwrap();
    let nodes = Urls::parse("amqp://a:5672,amqp://b:5672,amqp://c:5672");
    assert_eq!(nodes.0.len(), 3);
    let listeners: Vec<AmqpListen> = c
        .listeners()
        .into_iter()
        .filter_map(|l| match l {
            Listen::Amqp(a) => Some(a),
            Listen::Http { .. } => None,
        })
        .collect();
    assert_eq!(
        (listeners[0].url.as_ref(), listeners[0].queue_type),
        (Some(&nodes), Some(QueueType::Quorum)),
        "[amqp] is every listener's default"
    );
    assert_eq!(
        (listeners[1].url.as_ref(), listeners[1].queue_type),
        (Some(&Urls::parse("amqp://own")), Some(QueueType::Classic))
    );
    assert_eq!(c.amqp_client(&AmqpClientConfig::default()).url, Some(nodes));
    assert_eq!(
        c.events.url.as_ref().map(|u| u.0.clone()),
        Some(vec!["amqp://e1".to_owned(), "amqp://e2".to_owned()])
    );
    let e = Config::from_toml(
        "[amqp]
queue_type = \"mirrored\"",
    )
    .unwrap_err();
    assert!(e.contains("mirrored"), "{e}");
    let e = Config::from_toml(
        "[amqp]
url = []",
    )
    .unwrap_err();
    assert!(e.contains("no URL"), "{e}");
}

#[test]
fn telemetry_is_on_by_its_section_or_the_otel_variables_and_off_by_either() {
    let settings = |toml: &str, vars: &[(&str, &str)]| {
        let c = Config::from_toml(toml).unwrap();
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        let service = c.consul.as_ref().map(|c| c.service.as_str());
        telemetry::Telemetry::settings(c.telemetry.as_ref(), service, env)
            .expect("settings that agree")
    };
    assert_eq!(settings("", &[]), None);
    let from_env = settings("", &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).unwrap();
    assert_eq!(
        from_env.endpoint, None,
        "the exporter reads the variable itself"
    );
    assert_eq!(from_env.service_name, "wasmeca");
    assert_eq!(from_env.queue_size, 2048);
    let section = "[telemetry]\nendpoint = \"http://c:4318\"\nsample_ratio = 0.25\n\
                   [consul]\nservice = \"users\"";
    let on = settings(section, &[]).unwrap();
    assert_eq!(on.endpoint.as_deref(), Some("http://c:4318"));
    assert_eq!(on.ratio, Some(0.25));
    assert_eq!(on.service_name, "users", "the Consul service names it");
    let named = settings(section, &[("OTEL_SERVICE_NAME", "users-eu")]).unwrap();
    assert_eq!(named.service_name, "users-eu");
    let attributes = (
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.name=old,host.name=pod-7, service.name = users-us ,x=y",
    );
    let by_attributes = settings(section, &[attributes]).unwrap();
    assert_eq!(
        by_attributes.service_name, "users-us",
        "the resource attributes name it over the host's default, the last of a key winning"
    );
    let both = settings(section, &[attributes, ("OTEL_SERVICE_NAME", "users-eu")]).unwrap();
    assert_eq!(
        both.service_name, "users-eu",
        "OTEL_SERVICE_NAME wins, as the spec says"
    );
    let blank = settings(
        section,
        &[("OTEL_RESOURCE_ATTRIBUTES", "service.name=,a=b")],
    )
    .unwrap();
    assert_eq!(blank.service_name, "users", "a blank name names nothing");
    assert_eq!(settings(section, &[("OTEL_SDK_DISABLED", "true")]), None);
    let off = "[telemetry]\nenabled = false";
    assert_eq!(
        settings(off, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]),
        None
    );
}

#[test]
fn telemetry_takes_the_standard_variables_beneath_its_section() {
    let settings = |toml: &str, vars: &[(&str, &str)]| {
        let c = Config::from_toml(toml).expect("a config");
        let env = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        };
        telemetry::Telemetry::settings(c.telemetry.as_ref(), None, env)
    };
    let on = "[telemetry]\nendpoint = \"https://c:4318\"";
    let plain = settings(on, &[]).expect("valid").expect("on");
    assert_eq!(
        (plain.queue_size, plain.export_timeout),
        (2048, Duration::from_secs(10)),
        "the spec's defaults"
    );
    assert_eq!((plain.certificate, plain.identity), (None, None));
    let vars = [
        ("OTEL_BSP_MAX_QUEUE_SIZE", "4096"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
            "/etc/host.pem",
        ),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/host.key"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
    ];
    let by_env = settings(on, &vars).expect("valid").expect("on");
    assert_eq!(by_env.queue_size, 4096);
    assert!(by_env.gzip);
    assert!(!plain.gzip, "sent as it is by default");
    assert_eq!(
        by_env.export_timeout,
        Duration::from_millis(2500),
        "the traces' own variable first"
    );
    assert_eq!(by_env.certificate, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(
        by_env.identity,
        Some((
            PathBuf::from("/etc/host.pem"),
            PathBuf::from("/etc/host.key")
        ))
    );
    let file = "[telemetry]\nqueue_size = 100\nexport_timeout_ms = 700\ncertificate = \"/ca.pem\"\n\
                compression = \"none\"";
    let by_file = settings(file, &vars).expect("valid").expect("on");
    assert_eq!(
        (by_file.queue_size, by_file.export_timeout),
        (100, Duration::from_millis(700)),
        "the section's keys over the variables"
    );
    assert_eq!(by_file.certificate, Some(PathBuf::from("/ca.pem")));
    assert!(!by_file.gzip, "the section's none over the variable's gzip");
    for (vars, says) in [
        (
            &[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")][..],
            "OTEL_BSP_MAX_QUEUE_SIZE=lots is not a whole number above 0",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TIMEOUT", "0")][..],
            "OTEL_EXPORTER_OTLP_TIMEOUT=0 is not a whole number above 0",
        ),
        (
            &[("OTEL_BSP_MAX_QUEUE_SIZE", "100000000")][..],
            "OTEL_BSP_MAX_QUEUE_SIZE=100000000 must be at most 65536",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd")][..],
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION `zstd` is not gzip or none",
        ),
        (
            &[("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k")][..],
            "telemetry.client_key (or OTEL_EXPORTER_OTLP_(TRACES_)CLIENT_KEY) is set without its certificate",
        ),
    ] {
        let e = settings(on, vars).expect_err("refused");
        assert!(e.contains(says), "{vars:?}: {e}");
    }
    assert_eq!(
        settings("", &[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")]),
        Ok(None),
        "no complaint while telemetry is off"
    );
    let set = "[telemetry]\nqueue_size = 100";
    assert!(
        settings(set, &[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")]).is_ok(),
        "nor about a variable the section overrides"
    );
}

#[test]
fn telemetry_settings_out_of_range_are_refused() {
    for (toml, says) in [
        (
            "[telemetry]\nsample_ratio = 1.5",
            "sample_ratio 1.5 must be between 0 and 1",
        ),
        ("[telemetry]\nqueue_size = 0", "queue_size"),
        (
            "[telemetry]\nqueue_size = 70000",
            "queue_size must be at most 65536",
        ),
        (
            "[telemetry]\nendpoint = \"collector:4318\"",
            "not an http(s) URL",
        ),
    ] {
        let e = Config::from_toml(toml)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{toml}: {e}");
    }
}
