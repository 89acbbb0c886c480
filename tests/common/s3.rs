//! The real S3 server the tests use: Ceph's RADOS Gateway on loopback, started by
//! `scripts/s3-test-server.sh start` (which `.ci/run` calls). The variables that script's
//! `env` command prints override the defaults here, which are the script's own.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use attachments::store::ObjectStoreBackend;
use object_store::aws::AmazonS3Builder;

/// Where the S3 server is and how to sign in.
#[derive(Debug, Clone)]
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

fn var(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The test S3 server; panics with how to start it when nothing answers.
pub fn s3() -> S3 {
    let s3 = S3 {
        endpoint: var("ATTACHMENTS_S3_ENDPOINT", "http://127.0.0.1:7480"),
        bucket: var("ATTACHMENTS_S3_BUCKET", "attachments-test"),
        access_key: var("AWS_ACCESS_KEY_ID", "attachments-test"),
        secret_key: var("AWS_SECRET_ACCESS_KEY", "attachments-test-secret"),
    };
    let host = s3
        .endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let reachable = host
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "no S3 server answers at {}: start the test server with `scripts/s3-test-server.sh start` \
         (it installs Ceph's radosgw if needed; stop it with `scripts/s3-test-server.sh stop`)",
        s3.endpoint
    );
    s3
}

impl S3 {
    /// A store under a prefix of its own, so tests sharing the bucket never meet.
    pub fn store(&self, name: &str) -> ObjectStoreBackend {
        self.store_at(&unique_prefix(name))
    }

    /// A store under `prefix` (another handle on the same prefix stands for another
    /// server process on the bucket).
    pub fn store_at(&self, prefix: &str) -> ObjectStoreBackend {
        let inner = AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(&self.bucket)
            .with_access_key_id(&self.access_key)
            .with_secret_access_key(&self.secret_key)
            .build()
            .expect("S3 client");
        ObjectStoreBackend::new(Arc::new(inner)).with_prefix(prefix)
    }

    /// The `--store` URL of `attachments serve` for a prefix of the bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "s3://{}/{prefix}?endpoint={}&region=us-east-1",
            self.bucket, self.endpoint
        )
    }

    /// The variables a child process needs to sign in.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
        ]
    }
}

/// `name` and 8 random hex digits.
pub fn unique_prefix(name: &str) -> String {
    let mut nonce = [0u8; 4];
    getrandom::fill(&mut nonce).expect("random");
    format!("test-{name}-{}", hex::encode(nonce))
}
