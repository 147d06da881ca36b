-- The office's search by name reads a column of its own: the record's name without its marks,
-- written with the record, and filled in at the next start for records written before.
ALTER TABLE records ADD COLUMN name TEXT;
-- The office's lists count their matches from this index alone.
CREATE INDEX records_office ON records (form, commune, conflicted, deleted, name);
