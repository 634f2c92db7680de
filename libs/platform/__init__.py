"""The platform every service stands on: the bus, the service runtime, acks, settings, telemetry, the stage registry."""
