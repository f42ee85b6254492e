//! `[reload] watch`: reload when the config or any file it names changes — no signal needed.
//!
//! The parent directory of every file is watched (inotify, through the `notify` crate), not the
//! file itself: that is what catches the ways files really change — a Kubernetes Secret or
//! ConfigMap update (an atomic swap of the `..data` symlink), an editor that writes a new file
//! and renames it over the old one, cert-manager renewing a Secret. Events are debounced
//! (`reload.debounce`), then the same validated reload as SIGHUP runs; a broken change keeps the
//! last good state and the next change is tried again. After each reload the watched set follows
//! the files the config now names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::reload::Reloader;

/// Watches `config`'s files and reloads through `reloader` until `stop`.
pub(crate) async fn run(config: Config, reloader: Arc<Reloader>, stop: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Access events (reads, including our own) are not changes.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx.send(());
        }
    }) {
        Ok(watcher) => watcher,
        Err(error) => {
            warn!(%error, "cannot watch files; reload with SIGHUP or POST /reload");
            return;
        }
    };
    let debounce = config.reload.debounce;
    let mut watched = BTreeSet::new();
    follow(&mut watcher, &mut watched, &config.files());
    info!(
        directories = watched.len(),
        ?debounce,
        "watching configuration and certificate files"
    );
    loop {
        tokio::select! {
            event = rx.recv() => if event.is_none() { return },
            () = stop.cancelled() => return,
        }
        // Debounce: a Secret update or an editor's save is a burst of events.
        loop {
            tokio::select! {
                () = tokio::time::sleep(debounce) => break,
                event = rx.recv() => if event.is_none() { return },
                () = stop.cancelled() => return,
            }
        }
        info!("configuration or certificate files changed: reloading");
        let path = config.file.clone();
        let reloader_now = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || reloader_now.reload()).await;
        // Follow the files the config names now (an invalid config: keep watching the old set).
        if let Ok(current) = Config::load(&path) {
            follow(&mut watcher, &mut watched, &current.files());
        }
    }
}

/// Watches the parent directories of `files` (and unwatches those no longer needed).
fn follow(watcher: &mut impl Watcher, watched: &mut BTreeSet<PathBuf>, files: &[PathBuf]) {
    let wanted: BTreeSet<PathBuf> = files.iter().map(|f| parent(f)).collect();
    for gone in watched.difference(&wanted).cloned().collect::<Vec<_>>() {
        let _ = watcher.unwatch(&gone);
        watched.remove(&gone);
    }
    for dir in wanted {
        if watched.contains(&dir) {
            continue;
        }
        match watcher.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                debug!(dir = %dir.display(), "watching");
                watched.insert(dir);
            }
            Err(error) => warn!(dir = %dir.display(), %error, "cannot watch directory"),
        }
    }
}

fn parent(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
