-- The columns of a table as PostgreSQL types them (format_type: integer, text, date, ...).
SELECT attname, format_type(atttypid, atttypmod)
FROM pg_attribute
WHERE attrelid = %(table)s::regclass AND attnum > 0 AND NOT attisdropped
ORDER BY attnum;
