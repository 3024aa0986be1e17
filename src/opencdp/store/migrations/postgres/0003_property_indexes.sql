-- Property paths an operator declared for `properties.<path>` filters
-- (`opencdp properties index`): each has an expression index on events, built
-- concurrently before its row is written here (see postgres.dialect, property_index_sql).
CREATE TABLE property_indexes (
    path TEXT PRIMARY KEY,
    created_time BIGINT NOT NULL
);
