-- customer_activity.csv: a slowly changing history per client. An empty valid_to marks the
-- client's current row; there is at most one, and a row never ends before it starts.
CREATE TABLE {table} (
    idx        integer NOT NULL,
    valid_from date    NOT NULL,
    valid_to   date,
    scd_a      double precision,
    scd_b      integer,
    PRIMARY KEY (idx, valid_from),
    CONSTRAINT valid_to_after_valid_from CHECK (valid_to > valid_from)
);
CREATE UNIQUE INDEX {table_one_open_row_per_client} ON {table} (idx) WHERE valid_to IS NULL;
