//! Which object store holds the Parquet files and the catalog, chosen by URL.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStore;
use url::Url;

use crate::error::{Error, Result};

/// An object store and the key prefix under which aemos keeps its objects.
#[derive(Debug, Clone)]
pub struct ObjectStoreConfig {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The URL it was built from, for logs.
    pub url: String,
    /// See [`crate::Catalog::with_commit_verification`]; on by default for S3 URLs.
    pub verify_commits: Option<Duration>,
}

impl ObjectStoreConfig {
    /// The default: `{data_dir}/objects` on the local file system.
    pub fn default_url(data_dir: &FsPath) -> String {
        format!("file://{}", data_dir.join("objects").display())
    }

    /// `file:///abs/dir`, `s3://bucket/prefix` (AWS_* variables: credentials, region,
    /// `AWS_ENDPOINT` for S3-compatible servers, `AWS_ALLOW_HTTP=true` for plain HTTP) or
    /// `memory://` (tests).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with_options(url, &[])
    }

    /// As [`Self::from_url`], with S3 options (`aws_endpoint`, `aws_access_key_id`, ...) set
    /// on top of the environment's.
    pub fn from_url_with_options(url: &str, options: &[(&str, &str)]) -> Result<Self> {
        let bad = |reason: String| Error::ObjectStoreUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not an absolute file path".into()))?;
                std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                    path: dir.clone(),
                    source,
                })?;
                let store = LocalFileSystem::new_with_prefix(&dir)?.with_automatic_cleanup(true);
                (Arc::new(store), Path::default())
            }
            "s3" | "s3a" => {
                let mut builder = AmazonS3Builder::from_env().with_url(url);
                for (key, value) in options {
                    let key = key
                        .parse()
                        .map_err(|e: object_store::Error| bad(e.to_string()))?;
                    builder = builder.with_config(key, *value);
                }
                let store = builder.build().map_err(|e| bad(e.to_string()))?;
                let prefix =
                    Path::parse(parsed.path().trim_matches('/')).map_err(|e| bad(e.to_string()))?;
                (Arc::new(store), prefix)
            }
            "memory" => (Arc::new(InMemory::new()), Path::default()),
            other => return Err(bad(format!("unsupported scheme {other:?}"))),
        };
        let verify_commits =
            matches!(parsed.scheme(), "s3" | "s3a").then_some(Duration::from_millis(50));
        Ok(Self {
            store,
            prefix,
            url: url.to_string(),
            verify_commits,
        })
    }
}
