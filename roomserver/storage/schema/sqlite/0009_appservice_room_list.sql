-- The room directories of application services' networks
-- (PUT /directory/list/appservice/{networkId}/{roomId}): /publicRooms lists
-- them for third_party_instance_id "<appservice_id>|<network_id>" and with
-- include_all_networks.
CREATE TABLE rs_appservice_rooms (
    appservice_id TEXT NOT NULL,
    network_id    TEXT NOT NULL,
    room_id       TEXT NOT NULL,
    published_ts  BIGINT NOT NULL,
    PRIMARY KEY (appservice_id, network_id, room_id)
);
