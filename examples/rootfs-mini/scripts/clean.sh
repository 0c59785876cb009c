#!/usr/bin/env bash
rm -f /usr/bin/kubeadm
