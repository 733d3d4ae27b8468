//! The name server's KV configuration (PUT/GET/DELETE_KV_CONFIG,
//! GET_KVLIST_BY_NAMESPACE), persisted in `kvConfigPath`.

use std::collections::BTreeMap;

/// The name server's KV configuration (`kvConfig.json`): namespace → key → value.
#[derive(Debug, Default)]
pub struct KvConfig {
    path: Option<std::path::PathBuf>,
    table: std::sync::Mutex<KvTable>,
}

/// `kvConfig.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KvTable {
    /// Namespace → key → value.
    pub config_table: BTreeMap<String, BTreeMap<String, String>>,
}

impl KvConfig {
    /// Loads `path` (or its `.bak`); `None` keeps the table in memory only.
    pub fn load(path: Option<std::path::PathBuf>) -> Self {
        let table = path
            .as_deref()
            .map(crate::store::metadata::load::<KvTable>)
            .unwrap_or_default();
        KvConfig {
            path,
            table: std::sync::Mutex::new(table),
        }
    }

    fn persist(&self, t: &KvTable) -> Result<(), String> {
        match &self.path {
            Some(p) => crate::store::metadata::persist(p, t).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    /// PUT_KV_CONFIG.
    ///
    /// # Errors
    /// The file cannot be written (the change is kept in memory).
    pub fn put(&self, ns: &str, key: &str, value: &str) -> Result<(), String> {
        let mut t = crate::sync::lock(&self.table);
        t.config_table
            .entry(ns.to_owned())
            .or_default()
            .insert(key.to_owned(), value.to_owned());
        let snapshot = t.clone();
        drop(t);
        self.persist(&snapshot)
    }

    /// GET_KV_CONFIG.
    pub fn get(&self, ns: &str, key: &str) -> Option<String> {
        crate::sync::lock(&self.table)
            .config_table
            .get(ns)?
            .get(key)
            .cloned()
    }

    /// DELETE_KV_CONFIG.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn delete(&self, ns: &str, key: &str) -> Result<(), String> {
        let mut t = crate::sync::lock(&self.table);
        let removed = t
            .config_table
            .get_mut(ns)
            .is_some_and(|m| m.remove(key).is_some());
        t.config_table.retain(|_, m| !m.is_empty());
        let snapshot = t.clone();
        drop(t);
        if removed {
            self.persist(&snapshot)
        } else {
            Ok(())
        }
    }

    /// Where the table is kept (`kvConfigPath`), if anywhere.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// GET_KVLIST_BY_NAMESPACE.
    pub fn namespace(&self, ns: &str) -> Option<BTreeMap<String, String>> {
        crate::sync::lock(&self.table).config_table.get(ns).cloned()
    }
}
