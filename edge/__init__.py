"""The edge daemon: cameras in, tracked-face observations out over MQTT."""
