#ifndef TAPSTACK_CPCAP_SHIM_H
#define TAPSTACK_CPCAP_SHIM_H
#include <pcap/pcap.h>
#endif
