-- The device's last consumed seq when the database was last restored (or renewed its epoch):
-- what the phone sends after it came back. NULL: no restore since the phone was enrolled.
ALTER TABLE devices ADD COLUMN restored_seq BIGINT;
