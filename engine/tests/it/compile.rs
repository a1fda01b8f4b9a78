//! A chain that does not compile is refused with the node and the column, and nothing is
//! registered.

use crate::support::{filter, spec, Harness};
use aemos_engine::{CompiledChain, Error};
use serde_json::json;

fn refusal(chain: serde_json::Value) -> (String, Option<usize>, Option<u64>) {
    match CompiledChain::compile(spec(chain)) {
        Err(Error::InvalidChain {
            message,
            node,
            position,
        }) => (message, node, position),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("compiled"),
    }
}

#[test]
fn refusals_name_the_node_and_the_column() {
    let cases = [
        ("temperature >", 0, "does not parse"),
        (
            "temperature > 25 AND frobnicate(humidity) > 2",
            0,
            "unknown function frobnicate",
        ),
        (
            "temperature > 'warm'",
            0,
            "cannot compare a number with a string",
        ),
        ("temperature / 0 > 1", 0, "division by a constant zero"),
        ("1 > 0", 0, "references no variable"),
        ("temperature + 1", 0, "expected a boolean"),
        ("avg(temperature) > 3", 0, "takes a variable and a window"),
        (
            "avg(temperature, 'soon') > 3",
            0,
            "a window is a quoted duration",
        ),
        ("temperature IS NULL", 0, "not supported"),
    ];
    for (condition, node, needle) in cases {
        let (message, at, _) = refusal(filter("c", "s-1", condition));
        assert!(
            message.contains(needle),
            "{condition:?}: {message:?} lacks {needle:?}"
        );
        assert_eq!(at, Some(node), "{condition:?}");
    }
    let (_, node, position) = refusal(filter(
        "c",
        "s-1",
        "temperature > 25 AND frobnicate(humidity) > 2",
    ));
    assert_eq!((node, position), (Some(0), Some(22)));
    let (_, _, position) = refusal(filter("c", "s-1", "temperature > 'warm'"));
    assert_eq!(position, Some(15));
}

#[test]
fn transforms_actions_and_schedules_are_checked() {
    let chain = |extra: serde_json::Value| {
        let mut c = filter("c", "s-1", "temperature > 1");
        c["nodes"].as_array_mut().unwrap().push(extra);
        c
    };
    let (m, node, _) = refusal(chain(
        json!({"type": "transform", "set": {"f": "temperature > 2"}}),
    ));
    assert!(m.contains("expected a number"), "{m}");
    assert_eq!(node, Some(1));
    let (m, node, _) = refusal(chain(
        json!({"type": "action", "action": "command", "device": "d"}),
    ));
    assert!(m.contains("command"), "{m}");
    assert_eq!(node, Some(1));
    let mut c = filter("c", "s-1", "temperature > 1");
    c["schedule"] = json!({"cron": "every tuesday", "timezone": "UTC"});
    assert!(refusal(c).0.contains("schedule.cron"));
    let mut c = filter("c", "s-1", "temperature > 1");
    c["schedule"] = json!({"cron": "0 */5 * * * *", "timezone": "Mars/Olympus"});
    assert!(refusal(c).0.contains("schedule.timezone"));
    assert!(refusal(json!({"id": "", "nodes": []}))
        .0
        .contains("id must be"));
    assert!(refusal(json!({"id": "x", "nodes": []}))
        .0
        .contains("at least one filter"));
}

#[test]
fn a_condition_in_normal_form() {
    let c = CompiledChain::compile(spec(filter(
        "c",
        "s-1",
        "(a > 1 OR b > 2) AND NOT (c < 3 AND a > 1)",
    )))
    .unwrap();
    // (a>1 OR b>2) AND (c>=3 OR a<=1): four clauses, one of them contradictory but kept.
    assert_eq!(c.clauses.len(), 4);
    assert_eq!(c.inputs.len(), 3);
}

#[test]
fn ten_thousand_malformed_chains_leave_the_engine_serving() {
    let h = Harness::new(2);
    h.register(filter("good", "s-1", "t > 5"));
    for i in 0..10_000 {
        let condition = match i % 4 {
            0 => format!("t > {i} AND"),
            1 => format!("nope{i}(t) > 1"),
            2 => "t > 'x'".to_owned(),
            _ => "t / (2 - 2) > 1".to_owned(),
        };
        assert!(h
            .engine
            .register(spec(filter(&format!("bad-{i}"), "s-1", &condition)))
            .is_err());
    }
    assert_eq!(h.engine.chains().len(), 1);
    h.feed(&[("s-1", "t", 6.0)]);
    assert_eq!(
        h.take(),
        vec![("good".to_owned(), aemos_engine::FiringKind::Activated)]
    );
}
