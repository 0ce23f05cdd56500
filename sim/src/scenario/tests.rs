use super::*;

fn check(text: &str) -> Result<Scenario, Vec<CheckError>> {
    parse("t.toml", text, Path::new("t.toml"))
}

fn first_err(text: &str) -> String {
    check(text).unwrap_err()[0].to_string()
}

/// Every error, one per line, in the order reported (line order).
fn all_errs(text: &str) -> String {
    check(text).unwrap_err().iter().map(|e| format!("{e}\n")).collect()
}

#[test]
fn presence_trunk_fields_are_checked() {
    let node = "[[node]]\nname = \"cucm1\"\nkind = \"cucm\"\nzone = \"inside\"\n\
                ip = \"10.1.0.11\"\ncluster = \"cluster1\"\n";
    let e = first_err(&format!("{node}presence_trunk = \"dns-int\"\n"));
    assert!(e.starts_with("t.toml:7:18: presence_trunk `dns-int` is not an imp node"), "{e}");
    let e = first_err(&format!(
        "{node}presence_trunk = \"imp1\"\npresence_trunk_mode = \"carrier-pigeon\"\n"
    ));
    assert!(e.contains("unknown presence_trunk_mode `carrier-pigeon` (publish, subscribe)"), "{e}");
    let ok = format!("{node}presence_trunk = \"imp1\"\npresence_trunk_mode = \"subscribe\"\n");
    let s = check(&ok).unwrap();
    let cucm = s.nodes.iter().find(|n| n.name == "cucm1").unwrap();
    assert!(matches!(&cucm.kind, NodeKind::Cucm(c) if !c.publish_trunk));
}

#[test]
fn default_topology_is_valid() {
    let s = check("").unwrap();
    assert!(s.nodes.iter().any(|n| n.name == "dns-int"));
    assert!(s.nodes.iter().any(|n| n.name == "dns-ext"));
}

#[test]
fn syntax_error_has_line_and_column() {
    assert!(first_err("name = \"x\"\nseed = \n").starts_with("t.toml:2:"));
}

#[test]
fn unknown_node_kind() {
    let e = first_err("[[node]]\nname = \"x\"\nkind = \"teleporter\"\nzone = \"inside\"\n");
    assert!(e.starts_with("t.toml:3:8: unknown node kind `teleporter`"), "{e}");
}

#[test]
fn unknown_reference() {
    let e = first_err("[[client]]\nname = \"bob\"\nzone = \"inside\"\ndns = [\"dns-nowhere\"]\n");
    assert!(e.starts_with("t.toml:4:8: unknown node `dns-nowhere`"), "{e}");
}

#[test]
fn bad_duration() {
    let e = first_err("[[step]]\nat = \"soon\"\naction = \"crash\"\nnode = \"dns-int\"\n");
    assert!(e.starts_with("t.toml:2:6: bad duration"), "{e}");
}

#[test]
fn bad_zone_text_points_into_the_records() {
    let text = "[[node]]\nname = \"d\"\nkind = \"dns\"\nzone = \"inside\"\n[[node.authority]]\norigin = \"x.test\"\nrecords = \"\"\"\nok 60 IN A 10.0.0.1\nbad 60 IN A nonsense\n\"\"\"\n";
    let e = first_err(text);
    // Line 9 is `bad 60 IN A nonsense`.
    assert!(e.starts_with("t.toml:9:1: bad zone text"), "{e}");
}

#[test]
fn unknown_field_is_reported() {
    let e = all_errs("[[expect]]\nclient = \"a\"\nevent = \"x\"\nwithin = \"1s\"\nwhithin = 2\n");
    assert!(e.contains("t.toml:5:1: unknown field `whithin` (did you mean `within`?)"), "{e}");
    // Every error, in line order: the schema error does not hide the others.
    assert!(e.starts_with("t.toml:2:10: unknown client `a`\nt.toml:3:9: unknown event `x`"), "{e}");
}

#[test]
fn cfg_and_broken_xml_fields_are_checked() {
    let node = "[[node]]\nname = \"cucm1\"\nkind = \"cucm\"\nzone = \"inside\"\ncluster = \"c\"\n";
    let e = first_err(&format!("{node}broken_xml = {{ uds = \"gibberish\" }}\n"));
    assert!(e.starts_with("t.toml:6:22: unknown broken_xml `gibberish`"), "{e}");
    let e = first_err(&format!("{node}broken_xml = {{ cas = \"truncated\" }}\n"));
    assert!(e.starts_with("t.toml:6:22: node `cucm1` has no XML service `cas`"), "{e}");
    let e = first_err(&format!("{node}jabber_config = {{ \"a b\" = \"1\" }}\n"));
    assert!(e.contains("bad jabber_config parameter name `a b`"), "{e}");
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"install\"\nclient = \"alice\"\nbootstrap = { NOPE = \"1\" }\n",
    );
    assert!(e.starts_with("t.toml:3:10: unknown bootstrap switch `NOPE`"), "{e}");
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"install\"\nclient = \"alice\"\nbootstrap = { CTI = \"x\" }\n",
    );
    assert!(e.contains("bootstrap switch `CTI` is not modelled yet"), "{e}");
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"install\"\nclient = \"alice\"\nbootstrap = { AUTHENTICATOR = \"CUP\" }\n",
    );
    assert!(e.contains("AUTHENTICATOR=CUP is modelled only as SPEC SD9"), "{e}");
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"install\"\nclient = \"alice\"\nbootstrap = { EXCLUDED_SERVICES = \"FAX\" }\n",
    );
    assert!(e.contains("unknown excluded service `FAX`"), "{e}");
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"message\"\nclient = \"nobody\"\nto = \"a@b\"\nbody = \"x\"\n",
    );
    assert!(e.starts_with("t.toml:4:10: unknown client `nobody`"), "{e}");
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"message\"\nclient = \"alice\"\nto = \"bob\"\nbody = \"x\"\n",
    );
    assert!(e.starts_with("t.toml:5:6: bad JID `bob`"), "{e}");
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"move\"\nclient = \"alice\"\nzone = \"mars\"\ndns = [\"dns-ext\"]\n",
    );
    assert!(e.starts_with("t.toml:5:8: unknown zone `mars`"), "{e}");
    let e = first_err("[[step]]\nat = \"1s\"\naction = \"install\"\nclient = \"alice\"\n");
    assert!(e.starts_with("t.toml:3:10: action `install` needs `bootstrap`"), "{e}");
}

#[test]
fn imp_cluster_and_contact_fields_are_checked() {
    let imp = |name: &str, extra: &str| {
        format!(
            "[[node]]\nname = \"{name}\"\nkind = \"imp\"\nzone = \"inside\"\ncluster = \"imp-cluster1\"\n{extra}"
        )
    };
    let e = all_errs(&imp("imp1", "subcluster = 4\n"));
    assert!(e.contains("t.toml:6:14: subcluster 4 out of range"), "{e}");
    let e = first_err(&imp("imp1", "assignment = \"random\"\n"));
    assert!(e.starts_with("t.toml:6:14: unknown assignment `random`"), "{e}");
    // Seven nodes: too many for three subclusters of two (SPEC HA3).
    let seven: String = (3..=7).map(|i| imp(&format!("imp{i}"), "")).collect();
    let e = all_errs(&seven);
    assert!(e.contains("has 7 nodes: at most 6"), "{e}");
    let e = first_err(&imp("imp3", "subcluster = 1\n"));
    assert!(e.contains("give every node a `subcluster`, or none"), "{e}");
    // Contact lists name users and stay inside the limits (SPEC IMP3).
    let e = first_err("[[user]]\nid = \"erin\"\ncluster = \"cluster1\"\ncontacts = [\"zed\"]\n");
    assert!(e.starts_with("t.toml:4:13: unknown contact `zed`"), "{e}");
    let e = first_err(&imp("imp1", "contact_limit = 1\n"));
    assert!(e.contains("user `alice` has 2 contacts; the contact list limit is 1"), "{e}");
    // SPEC CAP3: 17,000 users × 199 contacts is 3,383,000 entries, beyond 45,000 × 75.
    let e = first_err(
        "[[population]]\nprefix = \"u\"\ncount = 17000\ncluster = \"cluster1\"\ncontacts = 199\n\
         zone = \"inside\"\ndns = [\"dns-int\"]\nsubnet = \"10.1.128.0/17\"\n",
    );
    assert!(
        e.contains(
            "holds 3383004 contact entries; its budget is 3375000 (45000 users × 75, SPEC CAP3)"
        ),
        "{e}"
    );
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"presence\"\nclient = \"alice\"\nshow = \"sleepy\"\n",
    );
    assert!(e.starts_with("t.toml:5:8: action `presence` needs `show`"), "{e}");
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"subscribe\"\nclient = \"alice\"\nto = \"bob@example.com/x\"\n",
    );
    assert!(e.starts_with("t.toml:5:6: bad JID `bob@example.com/x`: expected user@domain"), "{e}");
    // Group chat (SPEC IMP5): the database is a chatdb node, limits are at least 1, rooms
    // are room@service, numbered messages are bounded.
    let e = first_err(&imp("imp1", "chat_db = \"dns-int\"\n"));
    assert!(e.starts_with("t.toml:6:11: node `dns-int` is not a chatdb node"), "{e}");
    let e = first_err(&imp("imp1", "occupant_limit = 0\n"));
    assert!(e.starts_with("t.toml:6:18: occupant_limit must be at least 1"), "{e}");
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"join\"\nclient = \"alice\"\nroom = \"team\"\n",
    );
    assert!(e.starts_with("t.toml:5:8: bad room `team`: expected room@service"), "{e}");
    let e = first_err(
        "[[step]]\nat = \"1s\"\naction = \"room-message\"\nclient = \"alice\"\nroom = \"t@c.example.com\"\nbody = \"x\"\ncount = 0\n",
    );
    assert!(e.starts_with("t.toml:7:9: count must be 1 to 10000"), "{e}");
    let e = first_err("[[step]]\nat = \"1s\"\naction = \"leave\"\nclient = \"alice\"\n");
    assert!(e.starts_with("t.toml:3:10: action `leave` needs `room`"), "{e}");
}

#[test]
fn random_mutations_never_panic() {
    let base = include_str!("../default_topology.toml");
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for _ in 0..300 {
        let mut b = base.as_bytes().to_vec();
        for _ in 0..3 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % b.len();
            b[i] = b"=[]\"\n ax1.#"[(x >> 20) as usize % 11];
        }
        let t = String::from_utf8_lossy(&b);
        let _ = parse("m.toml", &t, Path::new("m.toml"));
    }
}
