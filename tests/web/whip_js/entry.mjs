// Eyevinn's WHIP and WHEP clients as published, bundled for a page: window.WHIPClient, window.WebRTCPlayer.
import { WebRTCPlayer } from "@eyevinn/webrtc-player";
import { WHIPClient } from "@eyevinn/whip-web-client";

window.WHIPClient = WHIPClient;
window.WebRTCPlayer = WebRTCPlayer;
