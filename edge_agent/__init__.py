"""Gateway agent: meter readers, interval features, ONNX scoring, durable outbox, MQTT publisher."""
