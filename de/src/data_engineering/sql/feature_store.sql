-- One row per client with both a profile and a label, with the client's latest activity:
-- the open row (empty valid_to), else the one with the greatest valid_from. Clients
-- without activity rows keep NULL scd_a / scd_b. Built beside the live table and swapped in.
-- Reads the customer tables the caller names: the ones its command staged, if it made them.
CREATE TABLE {table} AS
WITH latest_activity AS (
    SELECT DISTINCT ON (idx) idx, scd_a, scd_b
    FROM {customer_activity}
    ORDER BY idx, (valid_to IS NULL) DESC, valid_from DESC
)
SELECT p.idx, p.attr_a, p.attr_b, a.scd_a, a.scd_b, l.label
FROM {customer_profiles} AS p
JOIN {labels} AS l USING (idx)
LEFT JOIN latest_activity AS a USING (idx)
ORDER BY p.idx;

ALTER TABLE {table} ADD PRIMARY KEY (idx);
ANALYZE {table};
