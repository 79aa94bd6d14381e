//! The `settings` collection: the deployment-wide settings (`_id: "deployment"`), today
//! only the operator's Team Sharing switch.

use bson::doc;
use serde::{Deserialize, Serialize};

use super::{Store, StoreResult};

/// The id of the deployment's settings document.
const DEPLOYMENT: &str = "deployment";

/// The deployment's settings as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsDoc {
    /// `deployment`.
    #[serde(rename = "_id")]
    pub id: String,
    /// The operator's Team Sharing switch; absent until first switched (the configured
    /// default applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing_enabled: Option<bool>,
}

impl Store {
    /// The operator's deployment-wide switch, if it was ever switched.
    pub async fn deployment_sharing(&self) -> StoreResult<Option<bool>> {
        Ok(self.settings.find_one(doc! { "_id": DEPLOYMENT }).await?.and_then(|s| s.sharing_enabled))
    }

    /// Switches Team Sharing for the whole deployment.
    pub async fn set_deployment_sharing(&self, enabled: bool) -> StoreResult<()> {
        self.settings
            .update_one(doc! { "_id": DEPLOYMENT }, doc! { "$set": { "sharing_enabled": enabled } })
            .upsert(true)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{keys, load, round_trip};
    use super::*;

    #[test]
    fn settings_keep_their_stored_field_names() {
        let s = SettingsDoc { id: DEPLOYMENT.into(), sharing_enabled: Some(false) };
        assert_eq!(keys(&s), ["_id", "sharing_enabled"]);
        let (a, b) = round_trip(&s);
        assert_eq!((a, b), (s.clone(), s));
        let bare: SettingsDoc = load(doc! { "_id": "deployment" });
        assert_eq!(bare.sharing_enabled, None);
    }
}
