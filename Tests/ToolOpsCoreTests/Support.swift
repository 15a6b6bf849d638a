import ServiceContextModule

enum ServiceContextHelpers {
    static var empty: ServiceContext { .topLevel }
}
