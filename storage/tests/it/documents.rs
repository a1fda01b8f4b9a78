//! Documents shared by servers on one object store: what one server puts or removes, another
//! learns from the change log at its next poll, including a change written by a server whose
//! clock is behind; markers past their retention are removed; a watcher that could not poll
//! for longer than that is told to reload.

use std::sync::Arc;

use aemos_storage::{DocumentChanges, ManualClock, Storage, CHANGE_MARGIN_MS, CHANGE_RETENTION_MS};
use serde_json::json;

use crate::helpers::{args, local_store, T0};

async fn server(
    data: &std::path::Path,
    store: &std::path::Path,
    clock: &Arc<ManualClock>,
) -> Arc<Storage> {
    Storage::open(args(data, local_store(store), Arc::clone(clock)))
        .await
        .unwrap()
}

fn changed(names: &[&str]) -> DocumentChanges {
    DocumentChanges::Changed(names.iter().map(|n| n.to_string()).collect())
}

fn markers(store: &std::path::Path) -> usize {
    let dir = store.join("objects/changes/devices");
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_learns_what_another_put_or_removed() {
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = tempfile::tempdir().unwrap();
    let a_clock = Arc::new(ManualClock::new(T0));
    let b_clock = Arc::new(ManualClock::new(T0));
    let a = server(a_dir.path(), store.path(), &a_clock).await;
    let b = server(b_dir.path(), store.path(), &b_clock).await;
    let mut watch = b.watch_documents("devices");
    assert_eq!(b.document_changes(&mut watch).await.unwrap(), changed(&[]));

    a.put_document("devices", "pur-1", &json!({"v": 1}))
        .await
        .unwrap();
    a.put_document("devices", "pur:2", &json!({"v": 2}))
        .await
        .unwrap();
    a.put_document("devices", "pur-1", &json!({"v": 3}))
        .await
        .unwrap();
    b_clock.advance(1000);
    let mut got = match b.document_changes(&mut watch).await.unwrap() {
        DocumentChanges::Changed(names) => names,
        other => panic!("{other:?}"),
    };
    got.sort();
    assert_eq!(got, vec!["pur-1".to_string(), "pur:2".to_string()]);
    assert_eq!(
        b.document("devices", "pur-1").await.unwrap(),
        Some(json!({"v": 3}))
    );
    assert_eq!(
        b.document_changes(&mut watch).await.unwrap(),
        changed(&[]),
        "told once"
    );

    // A removal, by a server whose clock is 30 s behind: still within the margin.
    a_clock.set(T0 - 30_000);
    assert!(a.remove_document("devices", "pur:2").await.unwrap());
    b_clock.advance(1000);
    assert_eq!(
        b.document_changes(&mut watch).await.unwrap(),
        changed(&["pur:2"])
    );
    assert_eq!(b.document("devices", "pur:2").await.unwrap(), None);
    assert!(
        !a.remove_document("devices", "pur:2").await.unwrap(),
        "nothing left to remove"
    );
    assert_eq!(
        b.document_changes(&mut watch).await.unwrap(),
        changed(&[]),
        "no marker for nothing"
    );

    // Markers past their retention are removed at a poll; a watcher that could not poll for
    // that long reloads.
    assert_eq!(
        markers(store.path()),
        3,
        "one per put or removal, the same key at the same instant"
    );
    b_clock.advance(CHANGE_RETENTION_MS - CHANGE_MARGIN_MS - 10_000);
    b.document_changes(&mut watch).await.unwrap();
    b_clock.advance(CHANGE_MARGIN_MS + 20_000);
    assert_eq!(b.document_changes(&mut watch).await.unwrap(), changed(&[]));
    assert_eq!(markers(store.path()), 0, "old markers removed");
    let mut late = b.watch_documents("devices");
    b_clock.advance(CHANGE_RETENTION_MS);
    assert_eq!(
        b.document_changes(&mut late).await.unwrap(),
        DocumentChanges::Reload
    );
    assert_eq!(b.document_changes(&mut late).await.unwrap(), changed(&[]));
}
