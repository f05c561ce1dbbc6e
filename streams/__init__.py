"""The Kafka edge: settings, Faust app, codecs and dead letters, publisher, embedded broker, spool."""
