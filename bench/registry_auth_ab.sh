#!/usr/bin/env bash
# A/B: the same registry app, with and without the auth settings; time to ready and PSS after 30 s idle.
# Usage: bash bench/registry_auth_ab.sh (the native cache's registry 3.3.3 and Java 25 paths are hard-coded; in-memory
# storage, ports 18481/19401). Results: docs/registry-auth.md "Cost".
set -u
JAVA=/usr/lib/jvm/temurin-25-jdk-amd64/bin/java
JAR=$HOME/.cache/cryptopipe/registry-3.3.3/quarkus-run.jar
HEAP="-Xms32m -Xmx320m -XX:MinHeapFreeRatio=10 -XX:MaxHeapFreeRatio=20 -XX:G1PeriodicGCInterval=15000"
run() {
  local mode=$1
  env -i PATH=/usr/bin:/bin HOME=$HOME QUARKUS_HTTP_HOST=127.0.0.1 QUARKUS_HTTP_PORT=18481 QUARKUS_MANAGEMENT_HOST=127.0.0.1 QUARKUS_MANAGEMENT_PORT=19401 \
    APICURIO_RULES_GLOBAL_COMPATIBILITY=BACKWARD \
    $( [ "$mode" = auth ] && echo QUARKUS_HTTP_AUTH_BASIC=true QUARKUS_SECURITY_USERS_EMBEDDED_PLAIN_TEXT=true APICURIO_AUTH_ROLE_BASED_AUTHORIZATION=true APICURIO_AUTH_ANONYMOUS_READ_ACCESS_ENABLED=true QUARKUS_SECURITY_USERS_EMBEDDED_USERS_PRODUCER=pw1xxxxxxxxxxxxxxxxxxxxxxxxxxxxx QUARKUS_SECURITY_USERS_EMBEDDED_ROLES_PRODUCER=sr-developer QUARKUS_SECURITY_USERS_EMBEDDED_USERS_ADMIN=pw2xxxxxxxxxxxxxxxxxxxxxxxxxxxxx QUARKUS_SECURITY_USERS_EMBEDDED_ROLES_ADMIN=sr-admin ) \
    $JAVA $HEAP -jar $JAR > /tmp/regmeasure/$mode.log 2>&1 &
  local pid=$! t0=$(date +%s.%N)
  until curl -sf -o /dev/null http://127.0.0.1:19401/health/ready; do sleep 0.1; done
  local t1=$(date +%s.%N)
  # some traffic like the pipeline's: a registration (as producer when auth), reads
  local u=http://127.0.0.1:18481/apis/ccompat/v7 a=""
  [ "$mode" = auth ] && a="-u producer:pw1xxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
  for i in $(seq 20); do curl -s -o /dev/null $a -X POST -H 'Content-Type: application/vnd.schemaregistry.v1+json' -d "{\"schema\":\"{\\\"type\\\":\\\"record\\\",\\\"name\\\":\\\"R$i\\\",\\\"fields\\\":[]}\"}" $u/subjects/s$i/versions; curl -s -o /dev/null $u/schemas/ids/1; done
  local code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/vnd.schemaregistry.v1+json' -d '{"schema":"\"int\""}' $u/subjects/anon/versions)
  sleep 30
  local pss=$(awk '/^Pss:/{print $2}' /proc/$pid/smaps_rollup)
  printf '%s ready_s=%.1f pss_mib=%d anon_write=%s\n' $mode $(echo "$t1 - $t0" | bc) $((pss/1024)) $code
  kill $pid; wait $pid 2>/dev/null
}
for r in 1 2 3 4 5; do run plain; run auth; done
