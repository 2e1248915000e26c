# Sourced by run.sh, profile.sh and instructions.sh: the port layout the config templates of this
# directory name, filling a template, and waiting for a port. The caller sets HERE, WORK and die.

# ports BASE: the upstream's two ports, then the candidates' (the templates' @..._PORT@ names).
ports() {
    STABLE_PORT=$1
    CANARY_PORT=$(($1 + 1))
    NGINX_PORT=$(($1 + 10))
    HAPROXY_PORT=$(($1 + 11))
    SWITCHYARD_PORT=$(($1 + 12))
}

# fill TEMPLATE: $HERE/TEMPLATE with its placeholders filled, to $WORK/TEMPLATE.
fill() {
    sed -e "s#@WORK@#$WORK#g" -e "s#@STABLE_PORT@#$STABLE_PORT#g" -e "s#@CANARY_PORT@#$CANARY_PORT#g" \
        -e "s#@NGINX_PORT@#$NGINX_PORT#g" -e "s#@HAPROXY_PORT@#$HAPROXY_PORT#g" \
        -e "s#@SWITCHYARD_PORT@#$SWITCHYARD_PORT#g" "$HERE/$1" >"$WORK/$1"
}

# wait_port PORT SECONDS: until something listens on the loopback PORT, or die.
wait_port() {
    for _ in $(seq 1 "$(($2 * 10))"); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listens on port $1 after $2 s"
}
