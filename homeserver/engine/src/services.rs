//! The explicit services handle the HTTP surfaces receive.

use std::sync::{atomic::AtomicI64, Arc};

use ruma::ServerName;

use crate::{
    account_data::AccountDataService,
    accounts::AccountService,
    admin::AdminService,
    config::Config,
    core::Core,
    keys::{KeyBackupService, KeysService, SigningKey},
    media::MediaService,
    presence::PresenceService,
    push::PushService,
    ratelimit::RateLimiter,
    receipts::ReceiptService,
    rooms::{timeline::TimelineService, RoomService},
    storage::Storage,
    sync::{
        journal::{KeyCountCache, SyncJournal},
        notifier::Notifier,
        stream::StreamTracker,
        SyncService,
    },
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
    /// Server-Server transport and keys.
    pub federation: Arc<crate::federation::Federation>,
    /// Rooms shared with other servers: joins, invites, transactions.
    pub fed_rooms: Arc<crate::federation::rooms::RoomFederation>,
    pub push: PushService,
    pub media: MediaService,
    pub admin: AdminService,
}

impl Services {
    /// Opens storage, loads or creates the signing key and assembles the services.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Self>> {
        let server_name = ServerName::parse(&config.server_name)?;
        let key = SigningKey::load_or_generate(&config.signing_key_path)?;
        let storage = Storage::connect_with(
            &config.database.url,
            config.database.max_connections,
            &config.storage.cql,
            config.cluster.enabled(),
        )
        .await?;
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
        // Several instances: positions and snapshot ids interleave by instance id.
        let cluster = config
            .cluster
            .enabled()
            .then(|| crate::cluster::Link::new(&config.cluster, server_name.as_str()));
        let (stream, snapshot_stride, first_snapshot) = match &cluster {
            Some(link) => {
                let stride = i64::from(crate::cluster::MAX_INSTANCES);
                let offset = i64::from(link.instance);
                let start = max_pos.max(crate::cluster::start_position(&storage).await?);
                let first_snapshot = (max_snapshot / stride + 1) * stride + offset;
                (
                    StreamTracker::with_stride(start, stride, offset),
                    stride,
                    first_snapshot,
                )
            }
            None => (StreamTracker::new(max_pos), 1, max_snapshot + 1),
        };
        // Shared ephemeral state (typing, presence, sessions, limits) in Redis.
        let redis = match &cluster {
            Some(link) => Some(
                crate::cluster::Redis::start(
                    &config.cluster.redis,
                    server_name.as_str(),
                    &link.boot_id,
                )
                .await,
            ),
            None => None,
        };
        let notifier = Arc::new(Notifier::default());
        let (push_jobs, push_receiver) = crate::push::job_queue();
        let outbound = crate::federation::sender::Outbound::new(
            storage.clone(),
            &server_name,
            snapshot_stride,
            cluster.as_ref().map_or(0, |l| i64::from(l.instance)),
        )
        .await?;
        let erased = storage.admin.erased_users().await?.into_iter().collect();
        let single_instance = cluster.is_none();
        let journal = SyncJournal::new(stream.allocated(), single_instance);
        let core = Arc::new(Core {
            erased: parking_lot::RwLock::new(erased),
            outbound,
            push_jobs,
            server_name,
            key,
            storage,
            stream,
            journal,
            key_counts: KeyCountCache::new(single_instance),
            cluster,
            redis,
            snapshot_stride,
            bus: notifier.clone(),
            notifier,
            next_snapshot: AtomicI64::new(first_snapshot),
            config: config.clone(),
        });
        let rooms = RoomService::new(core.clone());
        crate::cluster::join(core.clone(), rooms.clone()).await?;
        let typing = TypingService::new(core.clone(), rooms.clone());
        typing.spawn_expiry();
        let receipts = ReceiptService::new(core.clone(), rooms.clone()).await?;
        let presence = PresenceService::new(core.clone(), rooms.clone());
        presence.spawn_idle_sweeper();
        let accounts = AccountService::new(core.clone(), rooms.clone());
        let keys = KeysService::new(core.clone());
        let ratelimit = RateLimiter::new(config.rate_limits.clone())
            .shared(core.redis.as_ref().map(|r| r.commands.clone()));
        let admin = AdminService::new(
            core.clone(),
            rooms.clone(),
            accounts.clone(),
            keys.clone(),
            presence.clone(),
            ratelimit.overrides(),
        )
        .await?;
        let account_data = AccountDataService::new(core.clone());
        let push = PushService::new(
            core.clone(),
            rooms.clone(),
            presence.clone(),
            account_data.clone(),
        );
        push.spawn(push_receiver);
        let federation = crate::federation::Federation::new(core.clone()).await?;
        let to_device = ToDeviceService::new(core.clone());
        let fed_rooms = crate::federation::rooms::RoomFederation::new(
            core.clone(),
            rooms.clone(),
            federation.clone(),
            crate::federation::rooms::EduServices {
                keys: keys.clone(),
                typing: typing.clone(),
                receipts: receipts.clone(),
                presence: presence.clone(),
                to_device: to_device.clone(),
            },
        );
        core.outbound.start(federation.client.clone()).await?;
        let media = MediaService::new(core.clone()).await?;
        media.set_remote(Arc::new(crate::federation::media::FederationMedia::new(
            federation.client.clone(),
            config.federation.request_timeout_ms,
        )?));
        Ok(Arc::new(Self {
            federation,
            fed_rooms,
            timeline: TimelineService::new(core.clone(), rooms.clone()),
            accounts,
            account_data,
            sync: SyncService::new(
                core.clone(),
                rooms.clone(),
                typing.clone(),
                receipts.clone(),
                presence.clone(),
                push.clone(),
            ),
            push,
            typing,
            receipts,
            presence,
            keys,
            key_backup: KeyBackupService::new(core.clone()),
            to_device,
            media,
            ratelimit,
            admin,
            rooms,
            core,
        }))
    }
}
