//! Topic names and permission bits (`PermName`), in one place for the broker, the name
//! server, the admin CLI and the client.

/// `PermName.PERM_INHERIT`.
pub const PERM_INHERIT: i32 = 0x1;
/// `PermName.PERM_WRITE`.
pub const PERM_WRITE: i32 = 0x2;
/// `PermName.PERM_READ`.
pub const PERM_READ: i32 = 0x4;

/// The default topic producers fall back to for auto-creation.
pub const TBW102: &str = "TBW102";
/// Read + write.
pub const PERM_RW: i32 = PERM_READ | PERM_WRITE;
/// Read + write + inherit (the default topic).
pub const PERM_RWI: i32 = PERM_RW | PERM_INHERIT;
/// Longest topic name.
pub const TOPIC_MAX_LENGTH: usize = 127;

/// Why a topic name is refused, RocketMQ's rules: 1..=127 characters of
/// `[%|a-zA-Z0-9_-]`.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("the topic is empty".into());
    }
    if topic.len() > TOPIC_MAX_LENGTH {
        return Err(format!(
            "the topic is longer than {TOPIC_MAX_LENGTH} characters"
        ));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-')))
    {
        return Err(format!(
            "the topic `{topic}` contains `{c}`; allowed are [%|a-zA-Z0-9_-]"
        ));
    }
    Ok(())
}

/// Whether `perm` lets producers write.
#[must_use]
pub fn is_writeable(perm: i32) -> bool {
    perm & PERM_WRITE != 0
}

/// Whether `perm` lets consumers read.
#[must_use]
pub fn is_readable(perm: i32) -> bool {
    perm & PERM_READ != 0
}
