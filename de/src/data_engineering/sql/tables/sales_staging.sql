-- One month's sales.csv as it is in the file; idx is unique within a file only. Every sale
-- must fall in the month the file is filed under.
CREATE TEMPORARY TABLE {table} (
    idx       integer PRIMARY KEY,
    value     numeric NOT NULL,
    date      date    NOT NULL,
    store_idx integer NOT NULL,
    CONSTRAINT date_in_file_month CHECK (date_trunc('month', date)::date = {month})
) ON COMMIT DROP;
