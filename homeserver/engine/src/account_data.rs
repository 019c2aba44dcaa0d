//! Account data (global and per room), including `m.fully_read` read markers.

use std::sync::Arc;

use crate::{
    core::Core,
    error::Result,
    sync::notifier::{Sections, WakeTarget},
};

#[derive(Clone)]
pub struct AccountDataService {
    core: Arc<Core>,
}

impl AccountDataService {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// Stores the content and wakes the user's other devices.
    pub async fn put(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        event_type: &str,
        content: &serde_json::Value,
    ) -> Result<()> {
        let pos = self.core.stream.allocate();
        let result = self
            .core
            .storage
            .account_data
            .put_account_data(user_id, room_id, event_type, &content.to_string(), pos)
            .await;
        let wake = if result.is_ok() {
            vec![WakeTarget::Changed(
                user_id.to_owned(),
                Sections::ACCOUNT_DATA,
            )]
        } else {
            Vec::new()
        };
        self.core.complete(pos, wake);
        result
    }

    pub async fn get(
        &self,
        user_id: &str,
        room_id: Option<&str>,
        event_type: &str,
    ) -> Result<Option<serde_json::Value>> {
        let raw = self
            .core
            .storage
            .account_data
            .get_account_data(user_id, room_id, event_type)
            .await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }
}
