/** Prints the media edge's Kubernetes nginx configuration (k8s/media-edge/nginx.conf). */
import { K8S_MEDIA_EDGE, mediaEdgeConfig } from './nginx-config.js';

process.stdout.write(mediaEdgeConfig(K8S_MEDIA_EDGE));
