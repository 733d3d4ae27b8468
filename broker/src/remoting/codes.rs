//! Request and response codes (`RequestCode`, `ResponseCode`).

/// Request codes.
pub mod request {
    #![allow(missing_docs)]
    pub const SEND_MESSAGE: i32 = 10;
    pub const PULL_MESSAGE: i32 = 11;
    pub const QUERY_MESSAGE: i32 = 12;
    pub const QUERY_CONSUMER_OFFSET: i32 = 14;
    pub const UPDATE_CONSUMER_OFFSET: i32 = 15;
    pub const UPDATE_AND_CREATE_TOPIC: i32 = 17;
    pub const GET_ALL_TOPIC_CONFIG: i32 = 21;
    pub const UPDATE_BROKER_CONFIG: i32 = 25;
    pub const GET_BROKER_CONFIG: i32 = 26;
    pub const GET_BROKER_RUNTIME_INFO: i32 = 28;
    pub const SEARCH_OFFSET_BY_TIMESTAMP: i32 = 29;
    pub const GET_MAX_OFFSET: i32 = 30;
    pub const GET_MIN_OFFSET: i32 = 31;
    pub const GET_EARLIEST_MSG_STORETIME: i32 = 32;
    pub const VIEW_MESSAGE_BY_ID: i32 = 33;
    pub const HEART_BEAT: i32 = 34;
    pub const UNREGISTER_CLIENT: i32 = 35;
    pub const CONSUMER_SEND_MSG_BACK: i32 = 36;
    pub const END_TRANSACTION: i32 = 37;
    pub const CHECK_TRANSACTION_STATE: i32 = 39;
    pub const GET_CONSUMER_LIST_BY_GROUP: i32 = 38;
    pub const NOTIFY_CONSUMER_IDS_CHANGED: i32 = 40;
    pub const LOCK_BATCH_MQ: i32 = 41;
    pub const UNLOCK_BATCH_MQ: i32 = 42;
    pub const GET_ALL_CONSUMER_OFFSET: i32 = 43;
    pub const GET_ALL_DELAY_OFFSET: i32 = 45;
    pub const CHECK_CLIENT_CONFIG: i32 = 46;
    pub const PUT_KV_CONFIG: i32 = 100;
    pub const GET_KV_CONFIG: i32 = 101;
    pub const DELETE_KV_CONFIG: i32 = 102;
    pub const WIPE_WRITE_PERM_OF_BROKER: i32 = 205;
    pub const GET_KVLIST_BY_NAMESPACE: i32 = 219;
    pub const GET_SYSTEM_TOPIC_LIST_FROM_NS: i32 = 304;
    pub const UPDATE_NAMESRV_CONFIG: i32 = 318;
    pub const GET_NAMESRV_CONFIG: i32 = 319;
    pub const ADD_WRITE_PERM_OF_BROKER: i32 = 327;
    pub const REGISTER_BROKER: i32 = 103;
    pub const UNREGISTER_BROKER: i32 = 104;
    pub const GET_ROUTEINFO_BY_TOPIC: i32 = 105;
    pub const GET_BROKER_CLUSTER_INFO: i32 = 106;
    pub const UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: i32 = 200;
    pub const GET_ALL_SUBSCRIPTIONGROUP_CONFIG: i32 = 201;
    pub const GET_TOPIC_STATS_INFO: i32 = 202;
    pub const GET_CONSUMER_CONNECTION_LIST: i32 = 203;
    pub const GET_ALL_TOPIC_LIST_FROM_NAMESERVER: i32 = 206;
    pub const GET_PRODUCER_CONNECTION_LIST: i32 = 204;
    pub const DELETE_SUBSCRIPTIONGROUP: i32 = 207;
    pub const RESET_CONSUMER_CLIENT_OFFSET: i32 = 220;
    pub const INVOKE_BROKER_TO_RESET_OFFSET: i32 = 222;
    pub const QUERY_TOPIC_CONSUME_BY_WHO: i32 = 300;
    pub const GET_CONSUMER_RUNNING_INFO: i32 = 307;
    pub const CONSUME_MESSAGE_DIRECTLY: i32 = 309;
    pub const CLONE_GROUP_OFFSET: i32 = 314;
    pub const VIEW_BROKER_STATS_DATA: i32 = 315;
    pub const GET_BROKER_CONSUME_STATS: i32 = 317;
    pub const QUERY_CONSUME_QUEUE: i32 = 321;
    pub const GET_TOPIC_CONFIG: i32 = 351;
    pub const GET_CONSUME_STATS: i32 = 208;
    pub const DELETE_TOPIC_IN_BROKER: i32 = 215;
    pub const DELETE_TOPIC_IN_NAMESRV: i32 = 216;
    pub const SEND_MESSAGE_V2: i32 = 310;
    pub const SEND_REPLY_MESSAGE: i32 = 324;
    pub const SEND_REPLY_MESSAGE_V2: i32 = 325;
    pub const PUSH_REPLY_MESSAGE_TO_CLIENT: i32 = 326;
    pub const SEND_BATCH_MESSAGE: i32 = 320;
    pub const UPDATE_AND_CREATE_ACL_CONFIG: i32 = 50;
    pub const DELETE_ACL_CONFIG: i32 = 51;
    pub const GET_BROKER_CLUSTER_ACL_INFO: i32 = 52;
    pub const UPDATE_GLOBAL_WHITE_ADDRS_CONFIG: i32 = 53;
    pub const GET_BROKER_CLUSTER_ACL_CONFIG: i32 = 54;
    // ACL 2.0 (RocketMQ 5.3): users and policies.
    pub const AUTH_CREATE_USER: i32 = 3001;
    pub const AUTH_UPDATE_USER: i32 = 3002;
    pub const AUTH_DELETE_USER: i32 = 3003;
    pub const AUTH_GET_USER: i32 = 3004;
    pub const AUTH_LIST_USER: i32 = 3005;
    pub const AUTH_CREATE_ACL: i32 = 3006;
    pub const AUTH_UPDATE_ACL: i32 = 3007;
    pub const AUTH_DELETE_ACL: i32 = 3008;
    pub const AUTH_GET_ACL: i32 = 3009;
    pub const AUTH_LIST_ACL: i32 = 3010;
    pub const QUERY_DATA_VERSION: i32 = 322;
    pub const LITE_PULL_MESSAGE: i32 = 361;
    /// ferrocket: change a running broker's role (`role`, `epoch`, `masterAddr`).
    /// Outside RocketMQ's code range.
    pub const ROLE_CHANGE: i32 = 60001;
    /// ferrocket: the controller (operator) confirms the in-sync replica set it recorded
    /// (`epoch`, `members`), letting members that stopped catching up leave it.
    pub const CONFIRM_SYNC_STATE_SET: i32 = 60002;
    /// ferrocket: a DLedger leader hands leadership to `targetId` (`n1`) without
    /// losing an acknowledged record (`timeoutMillis`, default 10 000). Signed like a
    /// role change when a control secret is configured.
    pub const RAFT_TRANSFER_LEADER: i32 = 60003;
    /// ferrocket: a DLedger leader adds member `memberId` (`n3`) whose Raft port is
    /// `peerAddr` (learner until caught up, then voter; `timeoutMillis`, default 60 000).
    pub const RAFT_ADD_MEMBER: i32 = 60004;
    /// ferrocket: a DLedger leader removes member `memberId` (`timeoutMillis`).
    pub const RAFT_REMOVE_MEMBER: i32 = 60005;
}

/// Response codes.
pub mod response {
    #![allow(missing_docs)]
    pub const SUCCESS: i32 = 0;
    pub const SYSTEM_ERROR: i32 = 1;
    pub const SYSTEM_BUSY: i32 = 2;
    pub const REQUEST_CODE_NOT_SUPPORTED: i32 = 3;
    pub const FLUSH_DISK_TIMEOUT: i32 = 10;
    pub const SLAVE_NOT_AVAILABLE: i32 = 11;
    pub const FLUSH_SLAVE_TIMEOUT: i32 = 12;
    pub const MESSAGE_ILLEGAL: i32 = 13;
    pub const SERVICE_NOT_AVAILABLE: i32 = 14;
    pub const NO_PERMISSION: i32 = 16;
    pub const TOPIC_NOT_EXIST: i32 = 17;
    pub const PULL_NOT_FOUND: i32 = 19;
    pub const PULL_RETRY_IMMEDIATELY: i32 = 20;
    pub const PULL_OFFSET_MOVED: i32 = 21;
    pub const QUERY_NOT_FOUND: i32 = 22;
    pub const CONSUMER_NOT_ONLINE: i32 = 206;
    pub const SUBSCRIPTION_PARSE_FAILED: i32 = 23;
    pub const SUBSCRIPTION_NOT_EXIST: i32 = 24;
    pub const SUBSCRIPTION_NOT_LATEST: i32 = 25;
    pub const SUBSCRIPTION_GROUP_NOT_EXIST: i32 = 26;
    pub const INVALID_PARAMETER: i32 = 29;
}
