//! The explicit services handle the HTTP surfaces receive.

use std::sync::{atomic::AtomicI64, Arc};

use ruma::ServerName;

use crate::{
    account_data::AccountDataService,
    accounts::AccountService,
    config::Config,
    core::Core,
    keys::{KeyBackupService, KeysService, SigningKey},
    presence::PresenceService,
    ratelimit::RateLimiter,
    receipts::ReceiptService,
    rooms::{timeline::TimelineService, RoomService},
    storage::Storage,
    sync::{notifier::Notifier, stream::StreamTracker, SyncService},
    to_device::ToDeviceService,
    typing::TypingService,
};

pub struct Services {
    pub core: Arc<Core>,
    pub rooms: RoomService,
    pub timeline: TimelineService,
    pub accounts: AccountService,
    pub account_data: AccountDataService,
    pub sync: SyncService,
    pub typing: TypingService,
    pub receipts: ReceiptService,
    pub presence: PresenceService,
    pub keys: KeysService,
    pub key_backup: KeyBackupService,
    pub to_device: ToDeviceService,
    pub ratelimit: RateLimiter,
}

impl Services {
    /// Opens storage, loads or creates the signing key and assembles the services.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Self>> {
        let server_name = ServerName::parse(&config.server_name)?;
        let key = SigningKey::load_or_generate(&config.signing_key_path)?;
        let storage =
            Storage::connect(&config.database.url, config.database.max_connections).await?;
        // Typing and presence take stream positions without persisting anything,
        // so clients may hold tokens above the highest persisted position. Start
        // from the clock (in thousandths of a millisecond) so a restarted server
        // never hands out a position a client has already seen; this holds while
        // the average allocation rate stays under a million per second.
        let persisted = storage
            .timeline
            .max_stream_pos()
            .await?
            .max(storage.receipts.max_receipt_pos().await?);
        let max_pos = persisted.max(crate::util::now_ms() * 1000);
        // To-device and device-list positions live in the E2EE tables.
        let max_pos = max_pos.max(storage.device_lists.max_stream_pos().await?);
        let max_snapshot = storage.rooms.max_snapshot_id().await?;
        let notifier = Arc::new(Notifier::default());
        let core = Arc::new(Core {
            server_name,
            key,
            storage,
            stream: StreamTracker::new(max_pos),
            bus: notifier.clone(),
            notifier,
            next_snapshot: AtomicI64::new(max_snapshot + 1),
            config: config.clone(),
        });
        let rooms = RoomService::new(core.clone());
        let typing = TypingService::new(core.clone(), rooms.clone());
        typing.spawn_expiry();
        let receipts = ReceiptService::new(core.clone(), rooms.clone()).await?;
        let presence = PresenceService::new(core.clone(), rooms.clone());
        presence.spawn_idle_sweeper();
        Ok(Arc::new(Self {
            timeline: TimelineService::new(core.clone(), rooms.clone()),
            accounts: AccountService::new(core.clone(), rooms.clone()),
            account_data: AccountDataService::new(core.clone()),
            sync: SyncService::new(
                core.clone(),
                rooms.clone(),
                typing.clone(),
                receipts.clone(),
                presence.clone(),
            ),
            typing,
            receipts,
            presence,
            keys: KeysService::new(core.clone()),
            key_backup: KeyBackupService::new(core.clone()),
            to_device: ToDeviceService::new(core.clone()),
            ratelimit: RateLimiter::new(config.rate_limits.clone()),
            rooms,
            core,
        }))
    }
}
