//! The sandbox's sweep reads the store's expiry listing once per pass (it read it once per
//! API before, and again for the store sweep), whatever it then expires or removes.
#![cfg(feature = "server")]

mod common;

use std::sync::Arc;

use attachments::server::{Sandbox, ServerConfig};
use attachments::store::{MemoryStore, Store};
use common::hooked::{Hooked, Op};

#[tokio::test]
async fn one_sweep_lists_the_store_once() {
    let store = Arc::new(Hooked::new(MemoryStore::new()));
    let sandbox = Sandbox::new(store.clone() as Arc<dyn Store>, ServerConfig::default());
    assert_eq!(sandbox.sweep().await.unwrap(), 0);
    assert_eq!(store.count(Op::ListExpired), 1);
    sandbox.sweep().await.unwrap();
    assert_eq!(store.count(Op::ListExpired), 2);
}
