-- A record's moves, read when an edit names a commune the record no longer holds: they say
-- where the record was as of the phone's cursor.
CREATE INDEX moves_record ON moves (record, at);
