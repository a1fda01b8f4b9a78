//! Every decoder with good and malformed input: each rejection names the index (and line) and
//! the reason; whole-body failures are errors.

use std::sync::Arc;

use aemos_ingest::{decode, DecodeArgs, Decoded, Error, Format, Precision};
use aemos_storage::schema::{self, DEVICE_IDX, SENSOR_IDX, TIME_IDX, VALUE_IDX, VARIABLE_IDX};
use arrow::array::{
    Array, AsArray, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};

const NOW: i64 = 1_768_905_000_000; // 2026-01-20T10:30:00Z

fn args() -> DecodeArgs {
    DecodeArgs::new(NOW)
}

fn run(format: Format, body: &str) -> Decoded {
    decode(format, body.as_bytes(), &args()).expect("decodable body")
}

fn col<T: 'static>(b: &RecordBatch, i: usize) -> &T {
    b.column(i).as_any().downcast_ref::<T>().unwrap()
}

fn rows(d: &Decoded) -> Vec<(i64, String, String, String, f64)> {
    let b = &d.batch;
    let t = col::<TimestampMillisecondArray>(b, TIME_IDX);
    let dev = col::<StringArray>(b, DEVICE_IDX);
    let s = col::<StringArray>(b, SENSOR_IDX);
    let var = col::<StringArray>(b, VARIABLE_IDX);
    let v = col::<Float64Array>(b, VALUE_IDX);
    (0..b.num_rows())
        .map(|i| {
            (
                t.value(i),
                dev.value(i).into(),
                s.value(i).into(),
                var.value(i).into(),
                v.value(i),
            )
        })
        .collect()
}

fn reasons(d: &Decoded) -> Vec<(usize, Option<usize>, String)> {
    d.rejected
        .iter()
        .map(|r| (r.index, r.line, r.reason.clone()))
        .collect()
}

#[test]
fn json_envelope_and_bare_array() {
    let d = run(
        Format::Json,
        r#"{"readings": [
            {"sensor": "s-1", "variable": "temperature", "value": 25.5, "time": "2026-01-20T10:30:00Z"},
            {"sensor": "s-1", "device": "dev-1", "variable": "on", "value": true, "time": 1768905001000},
            {"sensor": "s-2", "variable": "humidity", "value": 40}
        ]}"#,
    );
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    assert_eq!(
        rows(&d),
        vec![
            (NOW, "s-1".into(), "s-1".into(), "temperature".into(), 25.5),
            (NOW + 1000, "dev-1".into(), "s-1".into(), "on".into(), 1.0),
            (NOW, "s-2".into(), "s-2".into(), "humidity".into(), 40.0),
        ]
    );
    let d = run(
        Format::Json,
        r#"[{"sensor":"a","variable":"b","value":false}]"#,
    );
    assert_eq!(rows(&d)[0].4, 0.0);
}

#[test]
fn json_rejections_name_the_index_and_reason() {
    let d = run(
        Format::Json,
        r#"[
            {"sensor": "ok", "variable": "t", "value": 1},
            {"sensor": "ok", "variable": "t", "value": "25.5"},
            {"sensor": "bad sensor", "variable": "t", "value": 1},
            {"variable": "t", "value": 1},
            {"sensor": "ok", "variable": "t", "value": 1, "time": "yesterday"},
            {"sensor": "ok", "variable": "t", "value": 1, "time": -5},
            {"sensor": "ok", "variable": "t", "value": 1e999},
            {"sensor": "ok", "variable": "t:x", "value": 1},
            {"sensor": "ok", "variable": "t", "value": 1, "time": 1.5},
            7
        ]"#,
    );
    assert_eq!(d.accepted(), 1);
    let r = reasons(&d);
    let at = |i: usize| {
        r.iter()
            .find(|x| x.0 == i)
            .map(|x| x.2.clone())
            .unwrap_or_default()
    };
    assert!(
        at(1).contains("`value` as a number or a boolean"),
        "{}",
        at(1)
    );
    assert!(
        at(2).contains("sensor \"bad sensor\" has character ' '"),
        "{}",
        at(2)
    );
    assert!(at(3).contains("missing field `sensor`"), "{}", at(3));
    assert!(at(4).contains("not RFC 3339"), "{}", at(4));
    assert!(at(5).contains("outside"), "{}", at(5));
    assert!(!at(6).is_empty(), "out-of-range number rejected");
    assert!(at(7).contains("variable"), "{}", at(7));
    assert!(at(8).contains("not an integer"), "{}", at(8));
    assert!(!at(9).is_empty());
    assert_eq!(d.rejected_count, 9);
    // Each rejection also names the line its object starts on.
    let lines: Vec<_> = d.rejected.iter().map(|r| r.line.unwrap()).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7, 8, 9, 10, 11]);
}

#[test]
fn truncated_json_and_invalid_utf8_refuse_the_body() {
    let e = decode(Format::Json, br#"[{"sensor": "a", "variable""#, &args()).unwrap_err();
    assert!(
        matches!(&e, Error::Body { reason, .. } if reason.contains("malformed JSON")),
        "{e:?}"
    );
    let e = decode(Format::Json, b"[{\"sensor\": \"\xff\"}]", &args()).unwrap_err();
    assert!(
        matches!(&e, Error::Body { reason, .. } if reason.contains("UTF-8")),
        "{e:?}"
    );
    let e = decode(Format::Json, b"42", &args()).unwrap_err();
    assert!(matches!(&e, Error::Body { .. }));
    // NaN is not JSON.
    let e = decode(
        Format::Json,
        br#"[{"sensor":"a","variable":"b","value":NaN}]"#,
        &args(),
    )
    .unwrap_err();
    assert!(matches!(&e, Error::Body { .. }));
}

#[test]
fn ndjson_reports_lines() {
    let body = "{\"sensor\":\"a\",\"variable\":\"t\",\"value\":1}\n\n{\"sensor\":\"a\",\"variable\":\"t\"\n{\"sensor\":\"a\",\"variable\":\"t\",\"value\":2}\r\n";
    let d = run(Format::Ndjson, body);
    assert_eq!(d.accepted(), 2);
    assert_eq!(d.rejected.len(), 1);
    assert_eq!((d.rejected[0].index, d.rejected[0].line), (1, Some(3)));
    let mut bad = b"{\"sensor\":\"a\",\"variable\":\"t\",\"value\":1}\n".to_vec();
    bad.extend_from_slice(b"{\"sensor\":\"\xc3\x28\"}\n");
    let d = decode(Format::Ndjson, &bad, &args()).unwrap();
    assert_eq!(d.rejected[0].line, Some(2));
    assert!(d.rejected[0].reason.contains("UTF-8"));
}

#[test]
fn oversized_lines_are_rejected() {
    let mut a = args();
    a.max_line_bytes = 100;
    let long = format!(
        "{{\"sensor\":\"a\",\"variable\":\"t\",\"value\":1,\"pad\":\"{}\"}}\n",
        "x".repeat(200)
    );
    let d = decode(Format::Ndjson, long.as_bytes(), &a).unwrap();
    assert!(d.rejected[0].reason.contains("longer than 100 bytes"));
    let lp = format!("m,sensor=s f=1,pad=\"{}\"\n", "x".repeat(200));
    let d = decode(
        Format::LineProtocol(Precision::Nanoseconds),
        lp.as_bytes(),
        &a,
    )
    .unwrap();
    assert!(d.rejected[0].reason.contains("longer than 100 bytes"));
}

#[test]
fn line_protocol_fields_become_readings() {
    let body = "# comment\nair,sensor=s-1,site=x temperature=25.5,humidity=60i,on=true,label=\"x\" 1768905000000000000\nair,device=d-9 co2=410u 1768905001000000000\nairq pm25=3\n";
    let d = run(Format::LineProtocol(Precision::Nanoseconds), body);
    assert_eq!(d.rejected.len(), 1, "{:?}", d.rejected);
    assert_eq!(d.rejected[0].line, Some(2));
    assert!(d.rejected[0].reason.contains("\"label\" is a string"));
    assert_eq!(
        rows(&d),
        vec![
            (NOW, "s-1".into(), "s-1".into(), "temperature".into(), 25.5),
            (NOW, "s-1".into(), "s-1".into(), "humidity".into(), 60.0),
            (NOW, "s-1".into(), "s-1".into(), "on".into(), 1.0),
            (NOW + 1000, "d-9".into(), "d-9".into(), "co2".into(), 410.0),
            (NOW, "airq".into(), "airq".into(), "pm25".into(), 3.0),
        ]
    );
    let d = run(
        Format::LineProtocol(Precision::Seconds),
        "m,sensor=s v=1 1768905000\n",
    );
    assert_eq!(rows(&d)[0].0, NOW);
}

#[test]
fn line_protocol_rejections_name_the_line() {
    let body = "m,sensor=s v=1 1768905000000000000\nm,sensor=s\nm,sensor=s v=abc\nm,sensor=s only=\"text\"\nm,sensor=bad! v=1\nm,sensor=s v=1 notatime\n";
    let d = run(Format::LineProtocol(Precision::Nanoseconds), body);
    assert_eq!(d.accepted(), 1);
    let lines: Vec<_> = d.rejected.iter().map(|r| r.line.unwrap()).collect();
    assert_eq!(lines, vec![2, 3, 4, 5, 6]);
    assert!(d.rejected[2].reason.contains("\"only\" is a string"));
    assert!(d.rejected[3].reason.contains("sensor"));
    assert!(Precision::parse("h").is_err());
}

#[test]
fn line_protocol_keeps_the_measurement_and_the_other_tags() {
    let body = "cpu,host=b,cpu=cpu0,sensor=s usage=1\ncpu,host=a usage=2\nplain v=3\n";
    let d = run(Format::LineProtocol(Precision::Nanoseconds), body);
    assert!(d.rejected.is_empty(), "{:?}", d.rejected);
    let measurements = d.batch.column(schema::MEASUREMENT_IDX).as_string::<i32>();
    assert_eq!(measurements.value(0), "cpu");
    assert_eq!(measurements.value(2), "plain");
    let tags = d.batch.column(schema::TAGS_IDX).as_map();
    let tags_of = |row: usize| -> Vec<(String, String)> {
        let entries = tags.value(row);
        let keys = entries.column(0).as_string::<i32>();
        let values = entries.column(1).as_string::<i32>();
        (0..entries.len())
            .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
            .collect()
    };
    // Sorted by key, without `sensor` and `device` (they are columns of their own).
    assert_eq!(
        tags_of(0),
        vec![("cpu".into(), "cpu0".into()), ("host".into(), "b".into())]
    );
    assert_eq!(tags_of(1), vec![("host".into(), "a".into())]);
    assert!(tags_of(2).is_empty());
    // Other formats leave both null.
    let d = run(
        Format::Ndjson,
        "{\"sensor\":\"a\",\"variable\":\"t\",\"value\":1}\n",
    );
    assert!(d.batch.column(schema::MEASUREMENT_IDX).is_null(0));
    assert!(d.batch.column(schema::TAGS_IDX).is_null(0));
}

#[test]
fn line_protocol_refuses_what_influxdb_refuses() {
    let body =
        "m,sensor=s v=1\n\tm,sensor=s v=2\nm,host=a,host=b,sensor=s v=3\nm,sensor=s,sensor=t v=4\n";
    let d = run(Format::LineProtocol(Precision::Nanoseconds), body);
    assert_eq!(d.accepted(), 1);
    let reasons: Vec<_> = d
        .rejected
        .iter()
        .map(|r| (r.line.unwrap(), r.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0].0, 2);
    assert!(reasons[0].1.contains("begins with a tab"));
    assert_eq!(reasons[1], (3, "tag key \"host\" is given twice"));
    assert_eq!(reasons[2], (4, "tag key \"sensor\" is given twice"));
}

fn ipc(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
    w.write(batch).unwrap();
    w.finish().unwrap();
    drop(w);
    out
}

#[test]
fn arrow_ipc_with_dictionaries_and_nanosecond_times() {
    use arrow::array::{DictionaryArray, TimestampNanosecondArray};
    use arrow::datatypes::Int32Type;
    let sensor: DictionaryArray<Int32Type> = vec!["s-1", "s-1", "s-2"].into_iter().collect();
    let variable: DictionaryArray<Int32Type> = vec!["t", "t", "h"].into_iter().collect();
    let value = Float64Array::from(vec![1.0, f64::NAN, 3.0]);
    let time = TimestampNanosecondArray::from(vec![NOW * 1_000_000; 3]).with_timezone("UTC");
    let batch = RecordBatch::try_from_iter(vec![
        ("sensor", Arc::new(sensor) as _),
        ("variable", Arc::new(variable) as _),
        ("value", Arc::new(value) as _),
        ("time", Arc::new(time) as _),
    ])
    .unwrap();
    let d = decode(Format::ArrowIpc, &ipc(&batch), &args()).unwrap();
    assert_eq!(d.accepted(), 2);
    assert_eq!(
        (d.rejected[0].index, d.rejected[0].reason.as_str()),
        (1, "value is NaN")
    );
    assert_eq!(
        rows(&d)[1],
        (NOW, "s-2".into(), "s-2".into(), "h".into(), 3.0)
    );
}

/// Why the Arrow IPC input of the decoders fuzz target (`data[0]` picks the decoder) is
/// refused.
fn ipc_refusal(input: &[u8]) -> String {
    let (selector, body) = input.split_first().unwrap();
    assert_eq!(selector % 9, 7, "an Arrow IPC input of the decoders target");
    decode(Format::ArrowIpc, body, &args())
        .unwrap_err()
        .to_string()
}

/// Streams the fuzzer found arrow's reader panicking on, refused before arrow reads them with
/// what is wrong named: a record batch declaring a buffer at an offset past its body (arrow
/// sliced it), a schema declaring a column of type `NONE` (arrow's converter hit an
/// `unimplemented!`), and a schema without its list of columns (arrow unwrapped it).
#[test]
fn arrow_ipc_streams_arrow_panics_on_are_refused_before_arrow_reads_them() {
    let e = ipc_refusal(include_bytes!(
        "../../fuzz/corpus/decoders/575460a40ff4c5edf47b652368f781cea3509b88"
    ));
    assert!(
        e.contains("lies outside its") && e.contains("buffer"),
        "{e}"
    );
    let e = ipc_refusal(include_bytes!(
        "../../fuzz/corpus/decoders/e6ee464e6e8f52c95887d3e48f6cbd8c234742f8"
    ));
    assert!(e.contains("has type NONE") && e.contains("column"), "{e}");
    let e = ipc_refusal(include_bytes!(
        "../../fuzz/corpus/decoders/3e6b02158279be04b99b070e06de8165caf900ac"
    ));
    assert!(e.contains("declares no columns"), "{e}");
}

#[test]
fn arrow_ipc_with_missing_or_mistyped_columns_is_refused() {
    let missing = RecordBatch::try_from_iter(vec![
        ("sensor", Arc::new(StringArray::from(vec!["s"])) as _),
        ("value", Arc::new(Float64Array::from(vec![1.0])) as _),
    ])
    .unwrap();
    let e = decode(Format::ArrowIpc, &ipc(&missing), &args()).unwrap_err();
    assert_eq!(e.to_string(), "missing column `variable`");
    let mistyped = RecordBatch::try_from_iter(vec![
        ("sensor", Arc::new(StringArray::from(vec!["s"])) as _),
        ("variable", Arc::new(StringArray::from(vec!["v"])) as _),
        ("value", Arc::new(StringArray::from(vec!["1.0"])) as _),
    ])
    .unwrap();
    let e = decode(Format::ArrowIpc, &ipc(&mistyped), &args()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "column `value` has type Utf8, expected Float64"
    );
    let e = decode(Format::ArrowIpc, b"not arrow at all", &args()).unwrap_err();
    assert!(e.to_string().contains("more than the body holds"), "{e}");
    let mut truncated = ipc(&missing);
    truncated.truncate(truncated.len() / 2);
    assert!(decode(Format::ArrowIpc, &truncated, &args()).is_err());
}

#[test]
fn content_types_map_to_formats() {
    let p = Precision::default();
    assert_eq!(
        Format::from_content_type(Some("application/json; charset=utf-8"), p),
        Ok(Format::Json)
    );
    assert_eq!(Format::from_content_type(None, p), Ok(Format::Json));
    assert_eq!(
        Format::from_content_type(Some("text/plain"), p),
        Ok(Format::LineProtocol(p))
    );
    assert!(Format::from_content_type(Some("image/png"), p).is_err());
}

fn device(body: &str) -> Decoded {
    aemos_ingest::decode_device_payload("d-1", body.as_bytes(), &args()).expect("decodable body")
}

#[test]
fn device_payloads_shorthand_object_and_array() {
    let d = device(r#"{"temperature": 25.5, "on": true}"#);
    assert_eq!(
        rows(&d),
        vec![
            (NOW, "d-1".into(), "d-1".into(), "on".into(), 1.0),
            (NOW, "d-1".into(), "d-1".into(), "temperature".into(), 25.5),
        ]
    );
    let d = device(r#"{"sensor": "s-2", "variable": "humidity", "value": 40, "time": 1000}"#);
    assert_eq!(
        rows(&d),
        vec![(1000, "d-1".into(), "s-2".into(), "humidity".into(), 40.0)]
    );
    let d = device(
        r#"[{"variable": "t", "value": 1}, {"sensor": "s-3", "variable": "t", "value": 2}]"#,
    );
    assert_eq!(
        rows(&d)
            .iter()
            .map(|r| (r.2.as_str(), r.4))
            .collect::<Vec<_>>(),
        vec![("d-1", 1.0), ("s-3", 2.0)]
    );
}

#[test]
fn device_payloads_refuse_with_reasons() {
    let d = device(r#"{"temperature": "hot", "humidity": 40}"#);
    assert_eq!(d.rejected_count, 1);
    assert!(
        d.rejected[0].reason.contains("`temperature`"),
        "{:?}",
        d.rejected
    );
    let d = device(r#"[{"device": "other", "variable": "t", "value": 1}, {"variable": "t"}]"#);
    assert_eq!(d.rejected_count, 2);
    assert!(
        d.rejected[0].reason.contains("not the publishing device"),
        "{:?}",
        d.rejected
    );
    assert!(
        d.rejected[1].reason.contains("missing field `value`"),
        "{:?}",
        d.rejected
    );
    let d = device(r#"{"temperature": null}"#);
    assert_eq!(d.rejected_count, 1, "{:?}", d.rejected);
    for bad in ["{not json", "42", "", "\u{0}"] {
        let e = aemos_ingest::decode_device_payload("d-1", bad.as_bytes(), &args()).unwrap_err();
        assert!(matches!(e, Error::Body { .. }), "{bad:?}: {e}");
    }
}

/// A server refuses what its retention would delete and what is too far ahead of its clock, in
/// every format, naming the reading and the bound; readings without a time (arrival) pass.
#[test]
fn times_beyond_the_retention_or_too_far_ahead_are_refused_in_every_format() {
    let bounded = args().with_time_bounds(aemos_ingest::TimeBounds {
        retention: std::time::Duration::from_secs(90 * 86_400),
        max_future: std::time::Duration::from_secs(3600),
    });
    let old = NOW - 91 * 86_400_000;
    let ahead = NOW + 3_600_001;
    let edge = (NOW - 90 * 86_400_000, NOW + 3_600_000);
    let json = format!(
        r#"[{{"sensor":"s","variable":"v","value":1,"time":{old}}},
{{"sensor":"s","variable":"v","value":2,"time":{ahead}}},
{{"sensor":"s","variable":"v","value":3,"time":{}}},
{{"sensor":"s","variable":"v","value":4,"time":{}}},
{{"sensor":"s","variable":"v","value":5}}]"#,
        edge.0, edge.1
    );
    let lp = format!(
        "m,sensor=s v=1 {old}\nm,sensor=s v=2 {ahead}\nm,sensor=s v=3 {}\nm,sensor=s v=4 {}\nm,sensor=s v=5\n",
        edge.0, edge.1
    );
    for (format, body) in [
        (Format::Json, json.clone()),
        (
            Format::Ndjson,
            json.replace(",\n", "\n")
                .trim_matches(['[', ']'])
                .to_string(),
        ),
        (Format::LineProtocol(Precision::Milliseconds), lp),
    ] {
        let d = decode(format, body.as_bytes(), &bounded).expect("decodable body");
        let why = reasons(&d);
        assert_eq!(why.len(), 2, "{format:?}: {why:?}");
        assert_eq!((why[0].0, why[0].1), (0, Some(1)), "{format:?}");
        assert!(
            why[0]
                .2
                .contains("beyond the retention (90d, so before 2025-10-22T10:30:00.000Z)")
                && why[0].2.contains("time 2025-10-21T10:30:00.000Z"),
            "{format:?}: {}",
            why[0].2
        );
        assert_eq!((why[1].0, why[1].1), (1, Some(2)), "{format:?}");
        assert!(
            why[1].2.contains("more than 1h ahead") && why[1].2.contains("--max-future"),
            "{format:?}: {}",
            why[1].2
        );
        let values: Vec<f64> = rows(&d).iter().map(|r| r.4).collect();
        assert_eq!(values, vec![3.0, 4.0, 5.0], "{format:?}");
        assert_eq!(
            kinds(&d),
            vec![("retention", 1), ("future", 1)],
            "{format:?}"
        );
        // Unbounded (the default), every time in 1970..10000 passes.
        assert_eq!(
            decode(format, body.as_bytes(), &args()).unwrap().accepted(),
            5
        );
    }
}

/// The same bounds in the binary and device formats: Arrow IPC, and the device payloads of
/// MQTT and CoAP (an array of readings, with times).
#[test]
fn times_out_of_bounds_are_refused_in_arrow_ipc_and_device_payloads() {
    let bounded = args().with_time_bounds(aemos_ingest::TimeBounds {
        retention: std::time::Duration::from_secs(90 * 86_400),
        max_future: std::time::Duration::from_secs(3600),
    });
    let times = [
        NOW - 91 * 86_400_000,
        NOW + 3_600_001,
        NOW - 90 * 86_400_000,
        NOW + 3_600_000,
    ];
    let batch = RecordBatch::try_from_iter(vec![
        ("sensor", Arc::new(StringArray::from(vec!["s"; 4])) as _),
        ("variable", Arc::new(StringArray::from(vec!["v"; 4])) as _),
        (
            "value",
            Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 4.0])) as _,
        ),
        (
            "time",
            Arc::new(TimestampMillisecondArray::from(times.to_vec()).with_timezone("UTC")) as _,
        ),
    ])
    .unwrap();
    let from_ipc = decode(Format::ArrowIpc, &ipc(&batch), &bounded).unwrap();
    let payload = serde_json::Value::Array(
        times
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"variable": "v", "value": i + 1, "time": t}))
            .collect(),
    )
    .to_string();
    let from_device =
        aemos_ingest::decode_device_payload("d-1", payload.as_bytes(), &bounded).unwrap();
    for (name, d) in [("arrow ipc", &from_ipc), ("device payload", &from_device)] {
        let why = reasons(d);
        assert_eq!(why.len(), 2, "{name}: {why:?}");
        assert_eq!(why[0].0, 0, "{name}");
        assert!(
            why[0].2.contains("beyond the retention"),
            "{name}: {}",
            why[0].2
        );
        assert_eq!(why[1].0, 1, "{name}");
        assert!(why[1].2.contains("--max-future"), "{name}: {}", why[1].2);
        let values: Vec<f64> = rows(d).iter().map(|r| r.4).collect();
        assert_eq!(values, vec![3.0, 4.0], "{name}");
        assert_eq!(kinds(d), vec![("retention", 1), ("future", 1)], "{name}");
    }
}

/// The rejections of a decode, counted by kind (the `reason` label of
/// `aemos_readings_rejected_total`).
fn kinds(d: &Decoded) -> Vec<(&'static str, u64)> {
    d.rejected_by.iter().map(|(r, n)| (r.name(), n)).collect()
}

/// Each rejection is counted under its kind: malformed (missing field, wrong type), invalid
/// (a field out of its domain), forbidden (another device's reading).
#[test]
fn rejections_are_counted_by_kind() {
    let d = run(
        Format::Json,
        r#"[{"sensor":"s","variable":"v"},
{"sensor":"","variable":"v","value":1},
{"sensor":"s","variable":"v","value":"x"},
{"sensor":"s","variable":"v","value":1,"time":-5},
{"sensor":"s","variable":"v","value":1}]"#,
    );
    assert_eq!(d.accepted(), 1);
    assert_eq!(
        kinds(&d),
        vec![("malformed", 2), ("invalid", 2)],
        "{:?}",
        reasons(&d)
    );
    let d = device(r#"[{"device": "d-2", "variable": "v", "value": 1}]"#);
    assert_eq!(kinds(&d), vec![("forbidden", 1)]);
    let d = run(
        Format::LineProtocol(Precision::Nanoseconds),
        "m,sensor=s f=\"text\"\nm,sensor=s v=1 99999999999999999999\n",
    );
    assert_eq!(kinds(&d), vec![("malformed", 2)], "{:?}", reasons(&d));
    assert_eq!(
        d.rejected_count as u64,
        d.rejected_by.iter().map(|(_, n)| n).sum::<u64>()
    );
}

/// A JSON body of many rejected readings: each listed one has the line its object starts on
/// (counted incrementally: one pass over the body, not one per rejection), the first 1,000 are
/// listed and all are counted.
#[test]
fn json_rejections_name_their_lines_in_one_pass() {
    let mut body = String::from("[\n");
    for i in 0..5000 {
        // Every third reading is good; the others have a NaN-free but wrong value type, and
        // every object spans i % 3 + 1 lines.
        let value = if i % 3 == 0 { "1" } else { "\"x\"" };
        let pad = "\n".repeat(i % 3);
        body.push_str(&format!(
            "{{\"sensor\": \"s\",{pad} \"variable\": \"v\", \"value\": {value}}},\n"
        ));
    }
    body.pop();
    body.pop();
    body.push_str("\n]");
    let d = run(Format::Json, &body);
    let mut line = 2;
    let mut expected = Vec::new();
    for i in 0..5000 {
        if i % 3 != 0 {
            expected.push((i, Some(line)));
        }
        line += i % 3 + 1;
    }
    let got: Vec<(usize, Option<usize>)> = d.rejected.iter().map(|r| (r.index, r.line)).collect();
    assert_eq!(got, expected[..1000]);
    assert_eq!(d.rejected_count, expected.len());
    assert_eq!(d.accepted(), 5000 - expected.len());
}
