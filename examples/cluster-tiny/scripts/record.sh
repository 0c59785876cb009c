# Sourced by every hook: one line per hook run, in order, on this host.
mkdir -p /var/lib/sealimg-example
echo "$1 $(hostname) ${SEALOS_SYS_RUN_MODE:-?} ${SEALOS_SYS_KUBE_VERSION:-?}" >> /var/lib/sealimg-example/hooks.log
