import HTTPTypes
import Testing
@testable import ToolOpsHTTP

@Suite("Header values")
struct HeaderValueTests {
    /// The tool endpoint reads headers with `value(_:)` instead of HTTPFields' subscript (which
    /// allocates a joined string per lookup); the answers must be the subscript's.
    @Test func aHeaderReadsAsTheSubscriptWouldAnswer() throws {
        let tenant = try #require(HTTPField.Name("X-Tenant-ID"))
        var fields: HTTPFields = [.contentType: "application/json"]
        #expect(fields.value(tenant) == nil)
        fields.append(HTTPField(name: tenant, value: "acme"))
        #expect(fields.value(tenant) == "acme")
        #expect(fields.value(tenant) == fields[tenant])
        // Repeated: joined as the subscript joins them, so a doubled tenant header is refused
        // (", " is not a valid tenant) rather than read as its first value.
        fields.append(HTTPField(name: tenant, value: "other"))
        #expect(fields.value(tenant) == "acme, other")
        #expect(fields.value(tenant) == fields[tenant])
        #expect(!ToolRoutes.isAcceptableTenant(fields.value(tenant) ?? ""))
    }

    /// Cookies are joined as the subscript joins them ("; "), so a cookie credential reads the
    /// same whether it came as one field or several (HTTP/2 splits them).
    @Test func cookiesAreJoinedWithSemicolons() {
        var fields = HTTPFields()
        fields.append(HTTPField(name: .cookie, value: "a=1"))
        fields.append(HTTPField(name: .cookie, value: "b=2"))
        #expect(fields.value(.cookie) == "a=1; b=2")
        #expect(fields.value(.cookie) == fields[.cookie])
    }
}
