-- Property paths an operator declared for `properties.<path>` filters
-- (`opencdp properties index`): each has an expression index on events, built in the
-- same transaction as its row here (see sqlite.dialect, property_index_sql).
CREATE TABLE property_indexes (
    path TEXT PRIMARY KEY,
    created_time INTEGER NOT NULL
);
