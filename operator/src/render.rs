//! `ferrocket-operator render FILE`: the objects the operator would apply for the
//! `NameServer` and `BrokerGroup` documents in FILE, as a YAML stream (like `helm template`).

use serde::Deserialize;

use crate::builders::{self, BuildConfig, Roles, SpecError};
use crate::crd::{BrokerGroup, NameServer};

/// Why a file cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Not YAML, or a document does not match its kind.
    #[error("document {index}")]
    Yaml {
        /// 1-based document number.
        index: usize,
        /// The parser's error.
        source: serde_yaml::Error,
    },
    /// A document of a kind the operator does not manage.
    #[error("document {index}: kind `{kind}` is not NameServer or BrokerGroup")]
    UnknownKind {
        /// 1-based document number.
        index: usize,
        /// The kind found.
        kind: String,
    },
    /// The spec is rejected (the same check the reconciler makes).
    #[error("{kind} {name}")]
    Spec {
        /// Resource kind.
        kind: &'static str,
        /// Resource name.
        name: String,
        /// What is wrong.
        source: SpecError,
    },
    /// A BrokerGroup names a NameServer the file does not hold.
    #[error("BrokerGroup {group} refers to NameServer `{nameserver}`, which is not in the file; add it or set nameServerAddress")]
    MissingNameServer {
        /// The group.
        group: String,
        /// The missing reference.
        nameserver: String,
    },
    /// Serializing an object failed.
    #[error("serialize: {0}")]
    Serialize(String),
}

/// The custom resources found in a YAML stream.
#[derive(Default, Debug)]
pub struct Resources {
    /// `NameServer` documents.
    pub nameservers: Vec<NameServer>,
    /// `BrokerGroup` documents.
    pub groups: Vec<BrokerGroup>,
}

/// Parses every document of a YAML stream; empty documents are skipped.
///
/// # Errors
/// Bad YAML or a document of another kind.
pub fn parse(text: &str) -> Result<Resources, RenderError> {
    let mut out = Resources::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|source| RenderError::Yaml { index, source })?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "NameServer" => out.nameservers.push(
                serde_yaml::from_value(value)
                    .map_err(|source| RenderError::Yaml { index, source })?,
            ),
            "BrokerGroup" => out.groups.push(
                serde_yaml::from_value(value)
                    .map_err(|source| RenderError::Yaml { index, source })?,
            ),
            _ => return Err(RenderError::UnknownKind { index, kind }),
        }
    }
    Ok(out)
}

/// Renders every object for the resources in `text`.
///
/// # Errors
/// See [`RenderError`].
pub fn render(text: &str, cfg: &BuildConfig) -> Result<String, RenderError> {
    let res = parse(text)?;
    let mut values = Vec::new();
    let ser = |e: serde_json::Error| RenderError::Serialize(e.to_string());
    for ns in &res.nameservers {
        let objs = builders::build_nameserver(ns, cfg).map_err(|source| RenderError::Spec {
            kind: "NameServer",
            name: kube::ResourceExt::name_any(ns),
            source,
        })?;
        values.extend(builders::nameserver_values(&objs).map_err(ser)?);
    }
    for bg in &res.groups {
        let name = kube::ResourceExt::name_any(bg);
        let addr = match (&bg.spec.name_server_address, &bg.spec.name_server_ref) {
            (Some(a), _) if !a.trim().is_empty() => a.trim().to_string(),
            (_, Some(r)) => {
                let ns_namespace = builders::namespace_of(bg);
                let ns = res
                    .nameservers
                    .iter()
                    .find(|n| {
                        kube::ResourceExt::name_any(*n) == r.name
                            && builders::namespace_of(*n) == ns_namespace
                    })
                    .ok_or_else(|| RenderError::MissingNameServer {
                        group: name.clone(),
                        nameserver: r.name.clone(),
                    })?;
                builders::namesrv_addresses(ns).join(";")
            }
            _ => String::new(),
        };
        let objs =
            builders::build_broker_group(bg, &addr, &Roles::of(bg), cfg).map_err(|source| {
                RenderError::Spec {
                    kind: "BrokerGroup",
                    name: name.clone(),
                    source,
                }
            })?;
        values.extend(builders::broker_group_values(&objs).map_err(ser)?);
    }
    let mut out = String::new();
    for v in values {
        out.push_str("---\n");
        out.push_str(
            &serde_yaml::to_string(&v).map_err(|e| RenderError::Serialize(e.to_string()))?,
        );
    }
    Ok(out)
}
