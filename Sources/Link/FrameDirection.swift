/// Which way a frame crossed the link: from the wire to the stack, or back.
public enum FrameDirection: Sendable {
    case inbound
    case outbound
}
