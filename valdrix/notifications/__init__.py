"""notifications: events written in the transaction of the change they report, delivered by `valdrix worker`."""
