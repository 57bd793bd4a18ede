"""What a device is: kinds, reading models, topics, timestamps and the device catalog."""
