# Sourced: start the Debian PostgreSQL cluster if needed and export
# PALISADE_TEST_POSTGRES, a URL to a role that may create databases (each
# test makes and drops its own database).
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $4}' | grep -q online; then
  pg_lsclusters -h | grep -q . || pg_createcluster "$ver" main >/dev/null
  pg_ctlcluster "$ver" main start
fi
for _ in $(seq 1 50); do
  su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1 && break
  sleep 0.2
done
su postgres -c "psql -qtAc \"DO \\\$\\\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'palisade_test') THEN
    CREATE ROLE palisade_test LOGIN CREATEDB PASSWORD 'palisade_test';
  END IF; END \\\$\\\$;\"" >/dev/null
port=$(pg_lsclusters -h | awk '$4=="online"{print $3; exit}')
export PALISADE_TEST_POSTGRES="postgres://palisade_test:palisade_test@127.0.0.1:${port}/postgres"
echo "postgres: $PALISADE_TEST_POSTGRES"
