-- Change numbers from the writing transaction's id instead of a counter row that every push
-- held through its commit: a push's changes are numbered `change_base + (xid << 20) + k`, and
-- a pull reads up to the oldest transaction still running. The base makes the first numbers
-- follow the last one the counter handed out, so every phone's cursor stays valid.
INSERT INTO counters (name, value)
SELECT 'change_base', value + 1 - (pg_current_xact_id()::text::bigint << 20)
FROM counters WHERE name = 'changes';
