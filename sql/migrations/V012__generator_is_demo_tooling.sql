-- The synthetic-data generator is test and demo tooling: a production database
-- does not carry it. `monthend migrate --with-demo-data-tools` installs it
-- (sql/demo/generate_transactions.sql) where it is wanted.
DROP PROCEDURE IF EXISTS subledger.generate_transactions(text, bigint, numeric, bigint,
                                                         bigint, bigint, bigint);
