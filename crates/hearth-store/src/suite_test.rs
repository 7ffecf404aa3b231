//! openraft's storage conformance suite over the real stores on a temporary directory.

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;

use crate::{LogStore, StateMachine, TypeConfig};

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let log = LogStore::open(&dir.path().join("log"))
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        let sm = StateMachine::open(&dir.path().join("sm"))
            .map_err(|e| StorageError::read(TypeConfig::err_from_error(&e)))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await?;
    Ok(())
}
