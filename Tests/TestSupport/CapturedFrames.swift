/// Frames captured by `tapstack run --pcap` while the kernel (192.0.2.1,
/// be:5e:63:13:bd:1b) pinged and nc'd the stack (192.0.2.2, 02:00:00:00:00:02).
/// Real frames are the best test vectors: both sides are known-good.
public enum Captured {
    public static let kernelMAC = "be:5e:63:13:bd:1b"

    /// Kernel: ARP who-has 192.0.2.2 tell 192.0.2.1 (42 bytes, unpadded as tap delivers it).
    public static let arpRequest = hex("""
        ffff ffff ffff be5e 6313 bd1b 0806 0001
        0800 0604 0001 be5e 6313 bd1b c000 0201
        0000 0000 0000 c000 0202
        """)

    /// Stack: ARP 192.0.2.2 is-at 02:00:00:00:00:02 (padded to 60 bytes).
    public static let arpReply = hex("""
        be5e 6313 bd1b 0200 0000 0002 0806 0001
        0800 0604 0002 0200 0000 0002 c000 0202
        be5e 6313 bd1b c000 0201 0000 0000 0000
        0000 0000 0000 0000 0000 0000
        """)

    /// Kernel: ICMP echo request id 0x165f seq 1, 56 bytes of data, DF set.
    public static let echoRequest = hex("""
        0200 0000 0002 be5e 6313 bd1b 0800 4500
        0054 b686 4000 4001 001f c000 0201 c000
        0202 0800 88e6 165f 0001 3710 096b 0000
        0000 516b 0800 0000 0000 1011 1213 1415
        1617 1819 1a1b 1c1d 1e1f 2021 2223 2425
        2627 2829 2a2b 2c2d 2e2f 3031 3233 3435
        3637
        """)

    /// Stack: the echo reply to `echoRequest`, IP identification 1.
    public static let echoReply = hex("""
        be5e 6313 bd1b 0200 0000 0002 0800 4500
        0054 0001 0000 4001 f6a4 c000 0202 c000
        0201 0000 90e6 165f 0001 3710 096b 0000
        0000 516b 0800 0000 0000 1011 1213 1415
        1617 1819 1a1b 1c1d 1e1f 2021 2223 2425
        2627 2829 2a2b 2c2d 2e2f 3031 3233 3435
        3637
        """)

    /// Kernel: UDP 192.0.2.1:35789 → 192.0.2.2:7, payload "hello\n".
    public static let udpRequest = hex("""
        0200 0000 0002 be5e 6313 bd1b 0800 4500
        0022 24f9 4000 4011 91ce c000 0201 c000
        0202 8bcd 0007 000e ac1d 6865 6c6c 6f0a
        """)

    /// Stack: the echo of `udpRequest`, IP identification 4, padded to 60 bytes.
    public static let udpReply = hex("""
        be5e 6313 bd1b 0200 0000 0002 0800 4500
        0022 0004 0000 4011 f6c3 c000 0202 c000
        0201 0007 8bcd 000e ac1d 6865 6c6c 6f0a
        0000 0000 0000 0000 0000 0000
        """)
}
